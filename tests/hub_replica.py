"""A replica of the Hugging Face Hub at the HTTP layer, for the code paths that talk to it.

huggingface_hub 2.4 sends every request through one httpx2 client, which `set_client_factory`
replaces; datasets reaches the Hub through huggingface_hub. This replica answers the requests that
`load_dataset`, `hf_hub_download` and `snapshot_download` make (revision info, tree listings,
paths-info, file downloads with ranges) from repos held in memory, and answers gated and missing
repos the way the Hub does: 401 (anonymous) with `X-Error-Code: GatedRepo` or `RepoNotFound`.

The repos below are built in the exact layouts of the real ones (see the notes at the top of
segkit/data/sources.py): only their rows are fewer and their pictures tiny.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import datasets
import numpy as np
import yaml
from huggingface_hub.utils import httpx as httpx2
from PIL import Image

Files = dict[str, bytes]


@dataclass
class FakeHub:
    repos: dict[str, dict[str, tuple[str, Files]]] = field(default_factory=dict)
    """"datasets/owner/name" or "models/owner/name" -> branch -> (commit sha, files)."""
    gated: set[str] = field(default_factory=set)
    offline: bool = False
    """Refuse every connection, as a machine without network does."""
    log: list[str] = field(default_factory=list)
    private: set[str] = field(default_factory=set)
    """Repos ("models/owner/name") whose visibility is private; every other one is public."""

    def add(self, kind: str, repo: str, branch: str, files: Files) -> str:
        sha = hashlib.sha1(f"{kind}/{repo}@{branch}".encode()).hexdigest()
        self.repos.setdefault(f"{kind}/{repo}", {})[branch] = (sha, files)
        return sha

    def _find(self, key: str, rev: str) -> tuple[str | None, Files | None]:
        for branch, (sha, files) in self.repos.get(key, {}).items():
            if rev in (branch, sha):
                return sha, files
        return None, None

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        url = urlsplit(str(request.url))
        path, query = url.path, parse_qs(url.query)
        self.log.append(f"{request.method} {path}")
        if self.offline:
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        if path == "/api/agent-harnesses":
            return httpx2.Response(404)
        if path == "/api/validate-yaml":
            return self.validate_card(request)
        if path == "/api/repos/create" or re.match(r"^/api/(models|datasets)/[^/]+/[^/]+/(preupload|commit)/", path):
            return self.write(request, path)
        if re.match(r"^/api/(datasets|models)/[^/]+/[^/]+$", path):  # repo info at the default branch
            path += "/revision/main"
        m = (re.match(r"^/api/(datasets|models)/([^/]+/[^/]+)/(revision|tree|paths-info)/([^/]+)/?(.*)$", path)
             or re.match(r"^/(datasets)/([^/]+/[^/]+)/(resolve)/([^/]+)/(.+)$", path)
             or re.match(r"^/()([^/]+/[^/]+)/(resolve)/([^/]+)/(.+)$", path))
        if not m:
            return _error(404, "NotFound", f"replica: no route for {path}")
        kind, repo, action, rev, rest = m.group(1) or "models", m.group(2), m.group(3), unquote(m.group(4)), unquote(m.group(5))
        key = f"{kind}/{repo}"
        what = "dataset" if kind == "datasets" else "model"
        if key in self.gated:
            return _error(401, "GatedRepo", f"Access to {what} {repo} is restricted. You must have access to it "
                                            "and be authenticated to access it. Please log in.")
        if key not in self.repos:
            return _error(401, "RepoNotFound", "Repository not found")
        sha, files = self._find(key, rev)
        if sha is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if action == "revision":
            return httpx2.Response(200, json={"id": repo, "sha": sha, "private": key in self.private, "gated": False,
                                              "siblings": [{"rfilename": p} for p in files]})
        if action == "tree":
            return httpx2.Response(200, json=_tree(files, rest, query.get("recursive", ["false"])[0] == "true"))
        if action == "paths-info":
            body = request.content.decode()
            paths = json.loads(body)["paths"] if body.startswith("{") else parse_qs(body).get("paths", [])
            return httpx2.Response(200, json=[e for e in _tree(files, "", True) if e["path"] in {p.strip("/") for p in paths}])
        if rest not in files:
            return _error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
        data = files[rest]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return httpx2.Response(200, headers={**headers, "Content-Length": str(len(data))})
        if "Range" in request.headers:
            a, b = request.headers["Range"].split("=")[1].split("-")
            chunk = data[int(a): (int(b) + 1) if b else None]
            headers["Content-Range"] = f"bytes {a}-{int(a) + len(chunk) - 1}/{len(data)}"
            return httpx2.Response(206, headers=headers, content=chunk)
        return httpx2.Response(200, headers=headers, content=data)

    def validate_card(self, request: httpx2.Request) -> httpx2.Response:
        """The card metadata check the Hub runs on a README.md upload: here only the rule that
        `base_model` names models by id (owner/name), which a local folder is not."""
        content = json.loads(request.content)["content"]
        meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        bases = meta.get("base_model") or []
        for base in [bases] if isinstance(bases, str) else bases:
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(base)):
                return httpx2.Response(400, headers={"X-Error-Message": f'"base_model" must be a model id: {base}'},
                                       json={"errors": [{"message": f'"base_model" is not a model id: {base}'}]})
        return httpx2.Response(200, json={"errors": [], "warnings": []})

    def write(self, request: httpx2.Request, path: str) -> httpx2.Response:
        """What `create_repo` and `upload_folder` send: a create that leaves an existing repo's
        visibility as it is (409), a preupload that takes every file inline, an NDJSON commit."""
        if path == "/api/repos/create":
            body = json.loads(request.content)
            kind = {"dataset": "datasets", "space": "spaces"}.get(body.get("type") or "model", "models")
            repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            key = f"{kind}/{repo}"
            if key in self.repos:
                return httpx2.Response(409, headers={"X-Error-Message": "You already created this model repo"},
                                       json={"error": "You already created this model repo",
                                             "url": f"https://huggingface.co/{repo}"})
            self.add(kind, repo, "main", {})
            if body.get("visibility") == "private" or body.get("private"):  # hf 2.x sends visibility
                self.private.add(key)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo}", "name": repo})
        kind, repo, action, rev = re.match(r"^/api/([^/]+)/([^/]+/[^/]+)/([^/]+)/(.+)$", path).groups()
        sha, files = self._find(f"{kind}/{repo}", unquote(rev))
        if files is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if action == "preupload":
            listed = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                        for f in listed]})
        new = dict(files)
        for line in request.content.decode().splitlines():
            op = json.loads(line)
            value = op["value"]
            if op["key"] == "file":
                new[value["path"]] = base64.b64decode(value["content"])
            elif op["key"] == "deletedFile":
                new.pop(value["path"], None)
            elif op["key"] == "deletedFolder":
                new = {p: d for p, d in new.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        commit = hashlib.sha1(repr(sorted(new)).encode() + sha.encode()).hexdigest()
        self.repos[f"{kind}/{repo}"][unquote(rev)] = (commit, new)
        return httpx2.Response(200, json={"success": True, "commitOid": commit,
                                          "commitUrl": f"https://huggingface.co/{repo}/commit/{commit}"})


def _error(status: int, code: str, message: str, extra: dict | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers={"X-Error-Code": code, "X-Error-Message": message, **(extra or {})},
                           json={"error": message})


def _tree(files: Files, prefix: str, recursive: bool) -> list[dict]:
    prefix = prefix.strip("/")
    out, dirs = [], set()
    for p, data in sorted(files.items()):
        if prefix and not p.startswith(prefix + "/"):
            continue
        parts = p[len(prefix) + 1:].split("/") if prefix else p.split("/")
        for i in range(1, len(parts)):
            if recursive or i == 1:
                dirs.add("/".join(([prefix] if prefix else []) + parts[:i]))
        if recursive or len(parts) == 1:
            out.append({"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": p})
    return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)] + out


# -- the real repos' layouts ------------------------------------------------------------------------

rng = np.random.default_rng(0)


def png(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array)


def parquet(rows: dict, features: datasets.Features) -> bytes:
    buffer = io.BytesIO()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(buffer)
    return buffer.getvalue()


def scene_parsing_rows(n: int, ids: list[int], annotated: bool = True) -> bytes:
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image(),
                                  "scene_category": datasets.ClassLabel(names=["airport_terminal", "art_gallery", "badlands"])})
    images = [png(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [png(rng.choice(np.array(ids, dtype=np.uint8), (16, 24))) if annotated else None for _ in range(n)]
    return parquet({"image": images, "annotation": labels, "scene_category": [1] * n}, features)


def instance_rows(n: int) -> bytes:
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    images = [png(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)) for _ in range(n)]
    return parquet({"image": images, "annotation": [png(rng.integers(0, 9, (16, 24, 3), dtype=np.uint8))
                                                     for _ in range(n)]}, features)


def ade20k_branches(ids: list[int]) -> dict[str, Files]:
    """zhoubolei/scene_parse_150: a script on main; the parquet export on refs/convert/parquet, both
    configs side by side, no README, the test split without annotations."""
    main = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n",
            "README.md": b"---\nlicense:\n- bsd-3-clause\ntask_categories:\n- image-segmentation\n---\n# ADE20K\n",
            "scene_parse_150.py": b"import datasets\n# the legacy loading script\n"}
    export = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n",
              "scene_parsing/train/0000.parquet": scene_parsing_rows(4, ids),
              "scene_parsing/train/0001.parquet": scene_parsing_rows(3, ids),
              "scene_parsing/validation/0000.parquet": scene_parsing_rows(3, ids),
              "scene_parsing/test/0000.parquet": scene_parsing_rows(2, ids, annotated=False),
              "instance_segmentation/train/0000.parquet": instance_rows(3),
              "instance_segmentation/validation/0000.parquet": instance_rows(2),
              "instance_segmentation/test/0000.parquet": instance_rows(1)}
    return {"main": main, "refs/convert/parquet": export}


SIDEWALK_ID2LABEL = dict(enumerate((
    "unlabeled flat-road flat-sidewalk flat-crosswalk flat-cyclinglane flat-parkingdriveway flat-railtrack flat-curb "
    "human-person human-rider vehicle-car vehicle-truck vehicle-bus vehicle-tramtrain vehicle-motorcycle "
    "vehicle-bicycle vehicle-caravan vehicle-cartrailer construction-building construction-door construction-wall "
    "construction-fenceguardrail construction-bridge construction-tunnel construction-stairs object-pole "
    "object-trafficsign object-trafficlight nature-vegetation nature-terrain sky void-ground void-dynamic "
    "void-static void-unclear").split()))
"""segments/sidewalk-semantic's id2label.json, as its public copies print it."""

SIDEWALK_CARD = b"""---
dataset_info:
  features:
  - name: pixel_values
    dtype: image
  - name: label
    dtype: image
  splits:
  - name: train
    num_examples: 6
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
task_categories:
- image-segmentation
task_ids:
- semantic-segmentation
extra_gated_prompt: You agree to the terms of the license.
---
# sidewalk-semantic
"""


def sidewalk_files(ids: list[int]) -> Files:
    """segments/sidewalk-semantic as push_to_hub wrote it, with its id2label.json."""
    features = datasets.Features({"pixel_values": datasets.Image(), "label": datasets.Image()})
    n = 6
    rows = {"pixel_values": [png(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8)) for _ in range(n)],
            "label": [png(rng.choice(np.array(ids, dtype=np.uint8), (18, 32))) for _ in range(n)]}
    return {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", "README.md": SIDEWALK_CARD,
            "id2label.json": json.dumps({str(k): v for k, v in SIDEWALK_ID2LABEL.items()}).encode(),
            "data/train-00000-of-00001.parquet": parquet(rows, features)}
