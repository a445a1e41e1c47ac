"""The server of tests/warm_start.py: imports the third-party libraries a training run imports (not ddpm_hub), then
for each request (one JSON line on stdin) forks a child that runs the script as `python SCRIPT ARGS` would, writes
the child's pid, waits for it, and writes its wait status. It ends when stdin closes."""

import atexit
import io
import json
import os
import runpy
import sys
import traceback
from pathlib import Path

import accelerate  # noqa: F401
import datasets  # noqa: F401
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import safetensors.torch  # noqa: F401
import sklearn.datasets  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
from accelerate import Accelerator, PartialState  # noqa: F401
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration  # noqa: F401
from diffusers import (  # noqa: F401
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    ImagePipelineOutput,
    LCMScheduler,
    PriorTransformer,
    UNet2DConditionModel,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.optimization import get_scheduler  # noqa: F401
from transformers import (  # noqa: F401
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerFast,
)


def run(request: dict) -> int:
    """In the child: `python script *args` (its exit status)."""
    os.setsid()
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(file, fd)
        os.close(file)
    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False))
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), errors="backslashreplace", line_buffering=True)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    script = request["script"]
    sys.argv = [script, *request["args"]]
    paths = [str(Path(script).resolve().parent), *filter(None, request["env"].get("PYTHONPATH", "").split(os.pathsep))]
    sys.path[:0] = [path for path in paths if path not in sys.path]
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def main() -> None:
    sys.path[:] = [path for path in sys.path if Path(path or ".").resolve() != Path(__file__).resolve().parent]
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run(request)
                atexit._run_exitfuncs()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)


if __name__ == "__main__":
    main()
