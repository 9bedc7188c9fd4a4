"""deploy/: the Kubernetes manifests agree with the server (probe routes, port, flags, metric
names, drain vs grace period, shared RWX voices volume), render with kustomize and pass the
Kubernetes JSON schemas (where kubectl / kubernetes-validate are installed), and the Dockerfiles
copy files that exist and install the pinned torch before the package."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GPU, CPU = DEPLOY / "k8s" / "gpu", DEPLOY / "k8s" / "cpu"


def docs(folder: Path) -> dict[str, dict]:
    out = {}
    for f in sorted(folder.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") != "Kustomization":
                out[d["kind"]] = d
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from qwen3tts.server.app import ServerConfig, SpeakServer

    s = SpeakServer(ServerConfig(voices_dir=str(tmp_path_factory.mktemp("v"))))
    yield s
    s.engine.shutdown()


def env_of(container) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_manifests_match_the_server(server, monkeypatch):
    from qwen3tts import options, serve

    k = docs(GPU)
    assert set(k) == {"Deployment", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    dep = k["Deployment"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    env = env_of(c)
    # every QWEN3TTS_* variable is a flag of the server, and parses
    flag_envs = {"QWEN3TTS_" + n.upper().replace("-", "_") for n, *_ in serve.FLAGS} | {"QWEN3TTS_PRELOAD", "QWEN3TTS_GREEDY"}
    ours = {n for n in env if n.startswith("QWEN3TTS_") and n not in ("QWEN3TTS_CACHE",)}
    assert ours <= flag_envs, ours - flag_envs
    for n, v in env.items():
        if v is not None:
            monkeypatch.setenv(n, v)
    options.reload()  # the environment is read once (conftest resets it after the test)
    a = serve.parse_args([])
    assert a.preload and a.device == "cuda" and a.max_sessions == 10 and a.drain_seconds == 60.0
    # the port, the probes and the routes
    (port,) = c["ports"]
    assert port["containerPort"] == a.port == 8765 and port["name"] == "http"
    routes = {r.resource.canonical for r in server.app.router.routes() if r.method == "GET"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"} and "/readyz" in routes
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"} and "/healthz" in routes
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics" and "/metrics" in routes
    # the drain fits in the grace period, after preStop
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(pre[1]) + a.drain_seconds
    # one GPU per pod
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1 == c["resources"]["limits"]["nvidia.com/gpu"]
    # the shared voices volume: RWX, mounted where the server looks
    pvc = k["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    vol = next(v for v in pod["spec"]["volumes"] if v.get("persistentVolumeClaim"))
    assert vol["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert next(m for m in c["volumeMounts"] if m["name"] == vol["name"])["mountPath"] == a.voices_dir
    # the Service and the PDB select the pods; no stickiness
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == labels
    svc = k["Service"]
    assert svc["spec"]["selector"] == labels and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["sessionAffinity"] == "None"
    assert k["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    # the HPA scales this Deployment on a gauge the server exports, below its admission limit
    hpa = k["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    (m,) = hpa["spec"]["metrics"]
    assert m["type"] == "Pods" and m["pods"]["metric"]["name"] in server.lifecycle.gauges()
    assert "qwen3tts_active_requests" == m["pods"]["metric"]["name"]
    assert 0 < float(m["pods"]["target"]["averageValue"]) < a.max_sessions


def rendered(folder: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for `kubectl kustomize`) is not installed")
def test_kustomize_renders_both_variants():
    gpu, cpu = rendered(GPU), rendered(CPU)
    assert sorted(d["kind"] for d in gpu) == sorted(d["kind"] for d in cpu) == sorted(docs(GPU))
    dep = next(d for d in cpu if d["kind"] == "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in c["resources"]["requests"] and "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert env_of(c)["QWEN3TTS_DEVICE"] == "cpu" and c["image"].endswith(":cpu")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the patch keeps the rest
    for d in gpu + cpu:
        assert d["metadata"]["labels"]["app.kubernetes.io/name"] == "qwen3tts"


def test_manifests_pass_the_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)")
    all_docs = list(docs(GPU).values())
    if shutil.which("kubectl"):
        all_docs += rendered(CPU)
    for d in all_docs:
        kv.validate(d, "1.32.0", strict=True)
    broken = docs(GPU)["Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kv.ValidationError):  # the validator does catch a misspelt field
        kv.validate(broken, "1.32.0", strict=True)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles(name):
    from qwen3tts import serve

    text = (DEPLOY / name).read_text()
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    copies = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY")]
    assert copies and all((ROOT / src).exists() for srcs in copies for src in srcs)
    runs = [ln for ln in lines if ln.startswith("RUN")]
    torch_at = next(i for i, ln in enumerate(runs) if "torch==2.13.0" in ln)
    pkg_at = next(i for i, ln in enumerate(runs) if re.search(r"pip install .*(\s\.(\s|$)|'\.\[gpu\]')", ln))
    assert torch_at < pkg_at  # the pinned torch first: the package's own "torch>=" is then satisfied
    flag_envs = {"QWEN3TTS_" + n.upper().replace("-", "_") for n, *_ in serve.FLAGS} | {"QWEN3TTS_PRELOAD", "QWEN3TTS_CACHE"}
    env = dict(re.findall(r"(QWEN3TTS_[A-Z_]+)=(\S+)", " ".join(ln for ln in lines if ln.startswith("ENV"))))
    assert set(env) <= flag_envs and env["QWEN3TTS_HOST"] == "0.0.0.0" and env["QWEN3TTS_PRELOAD"] == "1"
    assert 'CMD ["python", "-m", "qwen3tts.serve"]' in lines and "/readyz" in text and "STOPSIGNAL SIGTERM" in lines
