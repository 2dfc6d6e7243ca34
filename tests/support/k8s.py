"""A Kubernetes control plane for the cluster tests, as local processes on free loopback
ports in a temporary folder: etcd, kube-apiserver (RBAC and Node authorization, client
certificates of its own CA, an audit log of every request), kube-controller-manager,
kube-scheduler and kwok, which plays the kubelet for fake nodes: their pods become
Running, a Job's pods complete.
.ci/install-k8s builds the binaries.

kwok acts only through Stages: the ones in tests/cluster/kwok are kwok's own defaults (the
ones `kwokctl` gives a cluster), given to it as config files.

    python -m tests.support.k8s [BIN]   # start one, print its kubeconfig, wait for Ctrl-C
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.services import free_port

ROOT = Path(__file__).parents[2]
STAGES = ROOT / "tests" / "cluster" / "kwok"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "skaffold",  # not the control plane's: tests/cluster/test_skaffold.py runs it
    "keda-operator",  # nor KEDA: tests/support/keda.py runs it for test_autoscaling.py
    "keda-adapter",
)
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"  # the pods' IPs, given by kwok
NODE_LEASE_SECONDS = 40
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Every request's user, verb, object and answer code, once answered (a watch: once started).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
# kwok manages the nodes with this annotation; the tests make no other kind.
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


def default_bin() -> Path:
    """Where .ci/install-k8s puts the binaries by default: beside this Python."""
    return Path(sys.executable).parent


def missing(bin_dir: Path) -> list[str]:
    """The control plane's binaries that are not in `bin_dir`."""
    return [name for name in BINARIES if not (bin_dir / name).is_file()]


class ControlPlane:
    """A running control plane: `server`, `kubeconfig` (the admin's, in system:masters),
    `kubectl()`, `client()`, `create_node()`, and `stop()`."""

    def __init__(self, bin_dir: Path, folder: Path, *, remove_folder: bool) -> None:
        self.bin_dir = bin_dir
        self.folder = folder
        self.remove_folder = remove_folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}
        self.ports = {
            name: free_port() for name in ("etcd", "peer", "apiserver", "kcm", "scheduler")
        }
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.pki = folder / "pki"
        self.kubeconfig = folder / "admin.kubeconfig"
        # JSON lines of audit.k8s.io/v1 Events: who was allowed or denied what (AUDIT_POLICY).
        self.audit_log = folder / "audit.log"

    # -- the processes -------------------------------------------------------------------

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        self.logs[name] = log
        process = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            start_new_session=True,  # a Ctrl-C meant for the tests does not reach it
        )
        self.processes[name] = process
        return process

    def log(self, name: str, lines: int = 40) -> str:
        """The last lines of a component's log."""
        path = self.folder / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name)}")

    def _wait(self, what: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if ready():
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.2)
        logs = "\n".join(f"--- {name}\n{self.log(name, 15)}" for name in self.processes)
        raise TimeoutError(f"{what} not ready after {timeout} s\n{logs}")

    def start(self, timeout: float = 90) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        etcd, peer = self.ports["etcd"], self.ports["peer"]
        self._start(
            "etcd",
            "--name=default",
            f"--data-dir={self.folder / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a test cluster: speed over durability
            "--log-level=warn",
        )
        self._wait(
            "etcd",
            lambda: (
                httpx.get(f"http://127.0.0.1:{etcd}/health", timeout=1).json()["health"] == "true"
            ),
            timeout,
        )
        pki = self.pki
        self._start(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd}",
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={self.folder / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            # No kubelet runs here, and 127.0.0.1 may not be an endpoint of `kubernetes`.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            # The aggregation layer, for APIs other servers serve (KEDA's external metrics):
            # it calls them with the front proxy's certificate and says who asked in headers.
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        )
        with self.client() as client:
            self._wait("kube-apiserver", lambda: client.get("/readyz").status_code == 200, timeout)
        self._start(
            "kube-controller-manager",
            *self._component_flags("kube-controller-manager", self.ports["kcm"]),
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            # Every controller on by default: the ones that needed a cloud are gone from it.
            "--controllers=*",
            # Autoscalers act within a second or two of their metric, not 15 s.
            "--horizontal-pod-autoscaler-sync-period=1s",
        )
        self._start(
            "kube-scheduler", *self._component_flags("kube-scheduler", self.ports["scheduler"])
        )
        self._start(
            "kwok",
            f"--kubeconfig={self._kubeconfig('kwok')}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector={}={}".format(*FAKE_NODE_ANNOTATION),
            f"--cidr={POD_CIDR}",
            # A kubelet's heartbeat: a node lease renewed every 10 s, as kwokctl sets it.
            # Without it the node's only heartbeat is its status, which the node stage
            # renews every 10 to 20 minutes, so the node controller marks the node NotReady
            # after its 50 s grace, and every pod on it not ready, now and then.
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            *(f"--config={stage}" for stage in sorted(STAGES.glob("*.yaml"))),
        )
        for name in ("kube-controller-manager", "kube-scheduler"):
            port = self.ports["kcm" if name == "kube-controller-manager" else "scheduler"]
            self._wait(name, _healthy(port), timeout)
        # Pods are admitted once their namespace's service account is there.
        with self.client() as client:
            self._wait(
                "the default service account",
                lambda: (
                    client.get("/api/v1/namespaces/default/serviceaccounts/default").status_code
                    == 200
                ),
                timeout,
            )

    def _audit_policy(self) -> Path:
        path = self.folder / "audit-policy.json"  # JSON is YAML
        path.write_text(json.dumps(AUDIT_POLICY) + "\n")
        return path

    def _component_flags(self, name: str, port: int) -> list[str]:
        kubeconfig = self._kubeconfig(name)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.folder / name}",
            "--leader-elect=false",
        ]

    def stop(self) -> None:
        """Stop what was started, newest first, by process id; remove a temporary folder."""
        stop_all(self.processes, self.logs)
        if self.remove_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- using it ------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client of the API server, as the admin."""
        return httpx.Client(base_url=self.server, verify=self.tls(), timeout=10, **kwargs)

    def tls(self, user: str | None = "admin") -> ssl.SSLContext:
        """TLS that trusts the API server, with the client certificate of `user` (None:
        no certificate, for a request that authenticates otherwise)."""
        context = ssl.create_default_context(cafile=self.pki / "ca.crt")
        if user:
            context.load_cert_chain(self.pki / f"{user}.crt", self.pki / f"{user}.key")
        return context

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl ARGS` as the admin; with check, a failure raises with its stderr."""
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr or result.stdout}")
        return result

    def create_node(self, name: str = "fake-0", timeout: float = 30) -> dict[str, Any]:
        """A fake node, managed by kwok; returned once it is Ready."""
        key, value = FAKE_NODE_ANNOTATION
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {key: value},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
        }
        with self.client() as client:
            client.post("/api/v1/nodes", json=node).raise_for_status()
            found: dict[str, Any] = {}

            def ready() -> bool:
                found.update(client.get(f"/api/v1/nodes/{name}").json())
                conditions = found.get("status", {}).get("conditions", [])
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            self._wait(f"node {name}", ready, timeout)
        return found

    # -- certificates and kubeconfigs ----------------------------------------------------

    def _write_pki(self) -> None:
        ca_key = _key()
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conveyor-test-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        self._save("ca", ca, ca_key)
        service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
        self._issue(
            "apiserver",
            ca,
            ca_key,
            common_name="kube-apiserver",
            server=True,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=(ipaddress.ip_address("127.0.0.1"), service_ip),
        )
        # The tests' admin, and kwok, are in system:masters; the controller manager and the
        # scheduler are the users the bootstrap RBAC policy grants their roles to.
        self._issue("admin", ca, ca_key, common_name="conveyor-admin", groups=("system:masters",))
        self._issue("kwok", ca, ca_key, common_name="kwok", groups=("system:masters",))
        self._issue(
            "kube-controller-manager", ca, ca_key, common_name="system:kube-controller-manager"
        )
        self._issue("kube-scheduler", ca, ca_key, common_name="system:kube-scheduler")
        self._issue("front-proxy-client", ca, ca_key, common_name="front-proxy-client")
        sa = _key()
        (self.pki / "sa.key").write_bytes(_private_pem(sa))
        (self.pki / "sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self._kubeconfig("admin", path=self.kubeconfig)

    def _issue(
        self,
        stem: str,
        ca: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        *,
        common_name: str,
        groups: tuple[str, ...] = (),
        server: bool = False,
        client: bool | None = None,
        dns: tuple[str, ...] = (),
        ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (),
    ) -> None:
        """pki/<stem>.crt and .key, signed by the CA: for a server, a client (the default
        when not a server), or both."""
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        if client if client is not None else not server:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(usages),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ip) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        self._save(stem, builder.sign(ca_key, hashes.SHA256()), key)

    def issue(self, stem: str, **kwargs: Any) -> None:
        """pki/<stem>.crt and .key, signed by the cluster's CA (see _issue)."""
        ca = x509.load_pem_x509_certificate((self.pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((self.pki / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        self._issue(stem, ca, ca_key, **kwargs)

    def _save(self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (self.pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.pki / f"{stem}.key").write_bytes(_private_pem(key))

    def _kubeconfig(self, user: str, path: Path | None = None) -> Path:
        """A kubeconfig of the API server for the user of pki/<user>.crt (JSON is YAML)."""
        path = path or self.folder / f"{user}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "conveyor-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.pki / f"{user}.crt"),
                        "client-key": str(self.pki / f"{user}.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "conveyor-test", "context": {"cluster": "conveyor-test", "user": user}}
            ],
            "current-context": "conveyor-test",
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path


def stop_all(processes: dict[str, subprocess.Popen[bytes]], logs: dict[str, IO[bytes]]) -> None:
    """Stop `processes`, newest first, by process id (SIGTERM, then SIGKILL after 15 s),
    and close their `logs`."""
    for name, process in reversed(processes.items()):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logs[name].close()
    processes.clear()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _healthy(port: int) -> Any:
    # The controller manager and the scheduler serve /healthz to anyone, with certificates
    # they make themselves (in --cert-dir).
    def healthy() -> bool:
        answer = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1)
        return answer.status_code == 200

    return healthy


def start(
    bin_dir: Path | None = None, folder: Path | None = None, timeout: float = 90
) -> ControlPlane:
    """Start a control plane with the binaries of `bin_dir` (default: beside this Python),
    in `folder` (default: a temporary one, removed by stop()); return it once its API
    server is ready, its controllers and scheduler healthy, and the namespace `default`
    has its service account. Add nodes with create_node()."""
    bin_dir = bin_dir or default_bin()
    if lacking := missing(bin_dir):
        raise FileNotFoundError(
            f"{', '.join(lacking)} not in {bin_dir}: .ci/install-k8s {bin_dir} builds them"
        )
    remove = folder is None
    folder = folder or Path(tempfile.mkdtemp(prefix="conveyor-k8s-"))
    folder.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(bin_dir, folder, remove_folder=remove)
    try:
        plane.start(timeout)
    except BaseException:
        plane.stop()
        raise
    return plane


def main() -> None:
    bin_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_bin()
    began = time.monotonic()
    plane = start(bin_dir)
    try:
        plane.create_node()
        print(f"ready in {time.monotonic() - began:.1f} s, with one fake node (fake-0)")
        print(f"server:     {plane.server}")
        print(f"kubeconfig: {plane.kubeconfig}")
        print(f"logs:       {plane.folder}/*.log")
        print(f"  export KUBECONFIG={plane.kubeconfig}")
        print("Ctrl-C stops it.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
