"""Where a saved model lives: a local folder, a run folder, or a model repo on the Hub.

Hub ids are fetched with `snapshot_download` into the Hugging Face cache, so `HF_HUB_OFFLINE=1`
serves them from the cache, and the token comes from the argument, `HF_TOKEN` or `hf auth login`.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)

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
    except GatedRepoError:
        raise ModelError(f"{path} is a gated model: accept its terms at https://huggingface.co/{path}, "
                         "then log in with `hf auth login` (or set HF_TOKEN).") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{path}: no local folder of that name, and no such model on the Hub (or it is "
                         "private: log in with `hf auth login` or set HF_TOKEN).") from None
    except RevisionNotFoundError:
        raise ModelError(f"{path}: revision '{revision}' does not exist (a branch, tag or commit).") from None
    except LocalEntryNotFoundError:
        raise ModelError(f"{path}: no local folder of that name; as a Hub id it is not in the local cache, "
                         "and the Hub cannot be reached "
                         "(offline, or HF_HUB_OFFLINE=1). Download it first with `hf download "
                         f"{path}`, or pass a local folder.") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelError(f"Could not download {path} from the Hub: {e}") from None
