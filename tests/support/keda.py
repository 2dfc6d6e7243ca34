"""KEDA on a test control plane (tests/support/k8s.py): its operator and its metrics
adapter as local processes, built by .ci/install-k8s from KEDA's Go module, with KEDA's own
CRDs, logged in as the cluster's admin.

The adapter serves external.metrics.k8s.io through the API server's aggregation layer: its
APIService names a Service of type ExternalName that points at localhost, so the API server
(and the horizontal pod autoscaler behind it) reaches the adapter on its loopback port. The
operator and the adapter speak gRPC with mutual TLS, with certificates of the test CA.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import yaml

from tests.support.k8s import ControlPlane, stop_all
from tests.support.services import free_port

NAMESPACE = "keda"
METRICS_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
BINARIES = ("keda-operator", "keda-adapter")


def crd_folder(bin_dir: Path) -> Path:
    """Where .ci/install-k8s puts KEDA's CRDs: beside the binaries' folder."""
    return bin_dir.parent / "share" / "keda" / "crds"


def missing(bin_dir: Path) -> list[str]:
    """What of KEDA .ci/install-k8s did not install in `bin_dir`."""
    lacking = [name for name in BINARIES if not (bin_dir / name).is_file()]
    if not any(crd_folder(bin_dir).glob("*.yaml")):
        lacking.append(f"KEDA's CRDs ({crd_folder(bin_dir)})")
    return lacking


class Keda:
    """KEDA's operator and metrics adapter, running for `plane` until stop()."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.folder = plane.folder / "keda"
        self.certs = self.folder / "certs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}
        self.ports = {
            name: free_port()
            for name in ("grpc", "metrics", "probes", "adapter", "adapter-metrics")
        }

    def start(self, timeout: float = 90) -> None:
        plane = self.plane
        self.certs.mkdir(parents=True, exist_ok=True)
        self._write_certs()
        plane.kubectl("create", "namespace", NAMESPACE)
        crds = sorted(crd_folder(plane.bin_dir).glob("*.yaml"))
        plane.kubectl("apply", "--server-side", *(f"--filename={path}" for path in crds))
        names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in crds]
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "WATCH_NAMESPACE": "",  # every namespace
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
        }
        grpc = f"127.0.0.1:{self.ports['grpc']}"
        self._start(
            "keda-operator",
            env,
            f"--metrics-bind-address=127.0.0.1:{self.ports['metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{self.ports['probes']}",
            f"--metrics-service-bind-address={grpc}",
            f"--cert-dir={self.certs}",
            f"--ca-dir={self.certs}",
            "--enable-cert-rotation=false",
            "--leader-elect=false",
        )
        self._start(
            "keda-adapter",
            env,
            f"--secure-port={self.ports['adapter']}",
            "--bind-address=127.0.0.1",
            f"--port={self.ports['adapter-metrics']}",
            f"--cert-dir={self.certs}",
            f"--tls-cert-file={self.certs / 'tls.crt'}",
            f"--tls-private-key-file={self.certs / 'tls.key'}",
            f"--lister-kubeconfig={plane.kubeconfig}",
            f"--authentication-kubeconfig={plane.kubeconfig}",
            f"--authorization-kubeconfig={plane.kubeconfig}",
            f"--metrics-service-address={grpc}",
        )
        plane.kubectl("apply", "--filename=-", input=yaml.safe_dump_all(self._registration()))
        self._wait_available(timeout)

    def _registration(self) -> list[dict[str, Any]]:
        """The Service and APIService that route external.metrics.k8s.io to the adapter."""
        ca_bundle = (self.certs / "ca.crt").read_bytes()
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": METRICS_SERVICE, "namespace": NAMESPACE},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": API_SERVICE},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                    "service": {
                        "namespace": NAMESPACE,
                        "name": METRICS_SERVICE,
                        "port": self.ports["adapter"],
                    },
                },
            },
        ]

    def _wait_available(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)}")
            found = self.plane.kubectl(
                "get",
                "apiservice",
                API_SERVICE,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Available')].status}",
                check=False,
            )
            if found.stdout == "True":
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"{API_SERVICE} not available after {timeout} s\n"
            + "\n".join(f"--- {name}\n{self.log(name, 20)}" for name in self.processes)
        )

    def _start(self, name: str, env: dict[str, str], *args: str) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.logs[name] = log
        self.processes[name] = subprocess.Popen(
            [str(self.plane.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            env=env,
            start_new_session=True,
        )

    def log(self, name: str, lines: int = 40) -> str:
        path = self.folder / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _write_certs(self) -> None:
        # One key pair for both ends of the gRPC link (mutual TLS) and the adapter's
        # HTTPS, valid for the names each is reached by.
        self.plane.issue(
            "keda",
            common_name="keda",
            server=True,
            client=True,
            dns=("localhost", f"{METRICS_SERVICE}.{NAMESPACE}.svc"),
            ips=(ipaddress.ip_address("127.0.0.1"),),
        )
        pki = self.plane.pki
        (self.certs / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
        (self.certs / "tls.crt").write_bytes((pki / "keda.crt").read_bytes())
        (self.certs / "tls.key").write_bytes((pki / "keda.key").read_bytes())

    def stop(self) -> None:
        """Take the external metrics API off the API server (an APIService whose server is
        gone fails every client's discovery), then stop the adapter and the operator, by
        process id."""
        self.plane.kubectl("delete", "apiservice", API_SERVICE, "--ignore-not-found", check=False)
        stop_all(self.processes, self.logs)


def start(plane: ControlPlane, timeout: float = 90) -> Keda:
    """KEDA on `plane`, returned once its external metrics API is available."""
    keda = Keda(plane)
    try:
        keda.start(timeout)
    except BaseException:
        keda.stop()
        raise
    return keda
