"""Where a saved model lives: a local folder, a run folder, or a model repo on the Hub.

Hub ids are fetched with `snapshot_download` into the Hugging Face cache, so `HF_HUB_OFFLINE=1`
serves them from the cache, and the token comes from the argument, `HF_TOKEN` or `hf auth login`.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download

from segkit.hub.explain import NETWORK_ERRORS, explain
from segkit.models.base import ModelError
from segkit.run_folder import RunFolder

MODEL_FILES = ["*.json", "*.safetensors", "*.md", "*.txt"]
"""What a segmentation model repo needs; pictures and reports in an export are left behind."""


def looks_local(path: str | Path) -> bool:
    """A path that exists, or is written like one (./, /, ~, or a Windows drive), is never a Hub id."""
    text = str(path)
    return Path(text).expanduser().exists() or text.startswith((".", "/", "~", "\\")) or text.count("/") != 1 \
        or ":" in text


def resolve_model_dir(path: str | Path, revision: str | None = None, token: str | bool | None = None) -> Path:
    """The local folder holding the model's config.json."""
    if looks_local(path):
        folder = RunFolder.model_dir(Path(path).expanduser())
        if not (folder / "config.json").is_file():
            raise ModelError(f"{path} has no config.json. Pass a folder written by save_pretrained or "
                             "`segkit export`, a run folder, or a Hub model id such as your-name/model.")
        return folder
    try:
        return Path(snapshot_download(str(path), revision=revision, token=token, allow_patterns=MODEL_FILES))
    except NETWORK_ERRORS as e:
        message = explain(e, str(path), "model", revision)
        raise ModelError(f"{path}: no local folder of that name, and as a Hub model id: "
                         f"{message or e}") from None
