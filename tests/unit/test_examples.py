"""The example of task code in its own image (examples/): a worker with the Dockerfile's
settings loads its kinds, the Dockerfile builds on the image the chart deploys, and the
README's helm command renders a release that runs it."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml

from services.core.kinds import load_kinds
from services.core.settings import Settings
from tests.chart.render import CHART, ROOT, by_kind, helm

EXAMPLES = ROOT / "examples"
DOCKERFILE = (EXAMPLES / "uploads" / "Dockerfile").read_text()


def instruction_args(name: str, text: str = DOCKERFILE) -> dict[str, str]:
    """The KEY=value pairs of every ARG or ENV instruction of a Dockerfile."""
    joined = text.replace("\\\n", " ")
    lines = re.findall(rf"^{name} (.+)$", joined, flags=re.MULTILINE)
    return dict(pair.split("=", 1) for line in lines for pair in shlex.split(line))


def test_a_worker_with_the_images_settings_loads_the_example_kinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = instruction_args("ENV")
    assert env["PYTHONPATH"] == "/opt/tasks"  # where COPY . /opt/tasks/uploads puts it
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("CONVEYOR_TASK_MODULES", env["CONVEYOR_TASK_MODULES"])
    kinds = load_kinds(Settings().task_modules)  # as services/worker/main.py loads them
    assert {"verify_upload", "upload_size"} <= set(kinds)
    assert kinds["verify_upload"].takes_context and kinds["verify_upload"].timeout_seconds == 600


def test_the_dockerfile_builds_on_the_worker_image_of_this_release() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    args = instruction_args("ARG")
    assert args["CONVEYOR_IMAGE"] == f"{values['image']['worker']}:{chart['appVersion']}"
    worker = instruction_args("ARG", (ROOT / "Dockerfile.worker").read_text())
    assert args["PYTHON_IMAGE"] == worker["PYTHON_IMAGE"]
    assert "tests" in (EXAMPLES / "uploads" / ".dockerignore").read_text().split()


def test_the_readmes_helm_command_deploys_the_worker_image_it_builds() -> None:
    readme = (EXAMPLES / "README.md").read_text().replace("\\\n", " ")
    built = set(re.findall(r"docker build .*-t (\S+) \.", readme))
    [upgrade] = [line for line in readme.splitlines() if line.startswith("helm upgrade")]
    flags = [f for f in shlex.split(upgrade)[4:] if f != "--reuse-values"]
    done = subprocess.run(
        [helm(), "template", "conveyor", str(CHART), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    manifests = [m for m in yaml.safe_load_all(done.stdout) if m]
    [config] = [
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"] == "conveyor-config"
    ]
    modules = instruction_args("ENV")["CONVEYOR_TASK_MODULES"]
    assert config["data"]["CONVEYOR_TASK_MODULES"] == modules
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in by_kind(manifests, "Deployment")
    }
    assert {images["conveyor-worker"]["image"]} == built  # the API's image stays Conveyor's
    assert images["conveyor-api"]["image"].startswith("ghcr.io/conveyor-dev/conveyor-api:")
    worker_env = images["conveyor-worker"]["env"]
    assert {"name": "UPLOADS_URL", "value": "https://uploads.example.com/incoming/"} in worker_env
