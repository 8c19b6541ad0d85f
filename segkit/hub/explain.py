"""What went wrong between segkit and the Hugging Face Hub, in words a user can act on.

Measured with huggingface_hub 2.4 and datasets 5.2 against answers at the HTTP layer:

- huggingface_hub raises `GatedRepoError` (401 anonymous, 403 logged in but not approved; the Hub
  sends `X-Error-Code: GatedRepo`), which is a subclass of `RepositoryNotFoundError` (401/404 with
  `X-Error-Code: RepoNotFound`), so it is caught first. `RevisionNotFoundError` for a bad branch.
  All are `HfHubHTTPError`, itself both an `httpx2.HTTPError` and an `OSError`.
- Offline (no network, or `HF_HUB_OFFLINE=1`) and not cached: `LocalEntryNotFoundError` from
  huggingface_hub; `ConnectionError` ("Couldn't reach ... on the Hub") from datasets.
- datasets turns both gated and missing repos into `DatasetNotFoundError` with its cause dropped,
  so only the message tells them apart ("is a gated dataset" / "doesn't exist on the Hub").
- A repo that only has a loading script: `RuntimeError("Dataset scripts are no longer supported,
  but found X.py")`.
- Network failures in create_repo/upload_folder are raw `httpx2` errors, which are not OSErrors:
  `NETWORK_ERRORS` catches them all.
"""

from __future__ import annotations

from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import httpx as hub_http

NETWORK_ERRORS: tuple[type[BaseException], ...] = (hub_http.HTTPError, OSError)
"""Every HTTP and network error the Hub client raises (huggingface_hub uses httpx2)."""

LOGIN = "log in with `hf auth login` (or set HF_TOKEN)"


def page(repo_id: str, repo_type: str) -> str:
    return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def gated(repo_id: str, repo_type: str) -> str:
    return (f"{repo_id} is gated: open {page(repo_id, repo_type)}, log in and accept its terms, then "
            f"{LOGIN} on this machine.")


def explain(error: BaseException, repo_id: str, repo_type: str = "model", revision: str | None = None) -> str | None:
    """A message for a Hub error, or None when `error` is not one this module knows."""
    what = "dataset" if repo_type == "dataset" else "model"
    text = str(error)
    if isinstance(error, GatedRepoError) or "is a gated dataset" in text:
        return gated(repo_id, repo_type)
    if isinstance(error, RepositoryNotFoundError) or "doesn't exist on the Hub" in text:
        return (f"{repo_id}: no such {what} on the Hub, or it is private (then {LOGIN}). Check the id at "
                f"{page(repo_id, repo_type)}.")
    if isinstance(error, RevisionNotFoundError):
        return f"{repo_id}: revision '{revision}' does not exist (give a branch, tag or commit of the repo)."
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or (
            isinstance(error, ConnectionError) and "Couldn't reach" in text):
        return (f"{repo_id}: the Hub cannot be reached (no network, or HF_HUB_OFFLINE=1) and this {what} is not "
                "in the local cache. Download it once with network, or point segkit at a local copy.")
    if isinstance(error, RuntimeError) and "scripts are no longer supported" in text:
        return (f"{repo_id} is read by a loading script, which datasets >= 4 no longer runs. Alternatives: its "
                "parquet export (data.revision: refs/convert/parquet, with data.data_dir naming the config's "
                "folder), a parquet mirror of it on the Hub (data.path: <repo id>), or its files downloaded "
                "locally (data.format: folder).")
    return None
