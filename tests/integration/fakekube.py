"""A small stand-in for a Kubernetes cluster, on loopback: the subset of the API
the executor uses (Jobs: list, watch, create, read status, delete; Pods: list, log;
Leases: create, read, replace with a version check, delete),
a Job controller (backoffLimit, activeDeadlineSeconds) and a kubelet that runs
each pod's container command as a local process.

The kubelet honours the pod spec: the container's command, args and env, its
runAsUser, and its volumes. Mounts are emulated: each volume is a directory of
the pod, and the mount paths in the env and in the ConfigMap's text are
rewritten to those directories (no container, no mount namespace).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

GRACE_SECONDS = 30.0  # terminationGracePeriodSeconds' default


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    wanted = dict(part.split("=", 1) for part in selector.split(","))
    return all(labels.get(k) == v for k, v in wanted.items())


@dataclass
class Pod:
    name: str
    job: str
    labels: dict[str, str]
    root: Path
    process: subprocess.Popen | None = None
    phase: str = "Pending"
    created: str = field(default_factory=now)

    @property
    def log(self) -> Path:
        return self.root / "log"

    def to_json(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": self.labels,
                "creationTimestamp": self.created,
            },
            "status": {"phase": self.phase},
        }


class FakeCluster:
    def __init__(self, root: Path, namespace: str = "catchup") -> None:
        self.root = root
        self.namespace = namespace
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, Pod] = {}
        self.config_maps: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.deletions: list[tuple[str, str | None]] = []  # (job, propagationPolicy)
        self.leases: dict[str, dict[str, Any]] = {}
        self.versions = 0
        self.stopping = threading.Event()
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                cluster.handle(self, "GET")

            def do_POST(self) -> None:
                cluster.handle(self, "POST")

            def do_PUT(self) -> None:
                cluster.handle(self, "PUT")

            def do_DELETE(self) -> None:
                cluster.handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # --- the API -------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if query.get("watch") in ("true", "1"):
            return self.watch_jobs(request, query)
        body = None
        length = int(request.headers.get("Content-Length") or 0)
        if length:
            body = json.loads(request.rfile.read(length))
        try:
            status, payload = self.route(method, parts, query, body)
        except KeyError as exc:
            status, payload = 404, self.status_object(404, "NotFound", f"{exc} not found")
        if isinstance(payload, str):
            data, kind = payload.encode(), "text/plain"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def watch_jobs(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        """A watch: one JSON event per line (ADDED, then MODIFIED or DELETED) until
        timeoutSeconds, the connection closing to end the stream."""
        wanted = query.get("fieldSelector", "").removeprefix("metadata.name=")
        until = time.monotonic() + float(query.get("timeoutSeconds") or 300)
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Connection", "close")
        request.end_headers()
        last = None
        while time.monotonic() < until and not self.stopping.is_set():
            with self.lock:
                job = self.jobs.get(wanted)
                current = json.dumps(job) if job else None
            if current != last:
                kind = "DELETED" if current is None else ("ADDED" if last is None else "MODIFIED")
                shown = json.loads(current or last or "{}")
                try:
                    request.wfile.write(
                        json.dumps({"type": kind, "object": shown}).encode() + b"\n"
                    )
                    request.wfile.flush()
                except OSError:
                    return  # the watcher went away
                last = current
            time.sleep(0.05)
        request.close_connection = True

    def route(
        self, method: str, parts: list[str], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        with self.lock:
            if parts[:5] == ["apis", "batch", "v1", "namespaces", self.namespace]:
                rest = parts[5:]
                if rest == ["jobs"] and method == "GET":
                    items = [
                        job
                        for job in self.jobs.values()
                        if matches(job["metadata"].get("labels", {}), query.get("labelSelector"))
                    ]
                    return 200, {"apiVersion": "batch/v1", "kind": "JobList", "items": items}
                if rest == ["jobs"] and method == "POST":
                    return self.create_job(body)
                if rest[0] == "jobs" and method == "GET":
                    return 200, self.jobs[rest[1]]
                if rest[0] == "jobs" and method == "DELETE":
                    policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
                    self.delete_job(rest[1], policy)
                    return 200, self.status_object(200, "Success", "deleted")
            if parts[:5] == ["apis", "coordination.k8s.io", "v1", "namespaces", self.namespace]:
                return self.lease_route(method, parts[5:], body)
            if parts[:4] == ["api", "v1", "namespaces", self.namespace]:
                rest = parts[4:]
                if rest == ["pods"]:
                    items = [
                        pod.to_json(self.namespace)
                        for pod in self.pods.values()
                        if matches(pod.labels, query.get("labelSelector"))
                    ]
                    return 200, {"apiVersion": "v1", "kind": "PodList", "items": items}
                if rest[0] == "pods" and rest[2:] == ["log"]:
                    lines = self.pods[rest[1]].log.read_text(errors="replace").splitlines()
                    tail = int(query.get("tailLines") or len(lines))
                    return 200, "\n".join(lines[-tail:]) + "\n"
        return 404, self.status_object(404, "NotFound", "/".join(parts))

    def lease_route(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        """Leases with optimistic concurrency: a replace must carry the current version."""
        if rest == ["leases"] and method == "POST":
            name = body["metadata"]["name"]
            if name in self.leases:
                return 409, self.status_object(409, "AlreadyExists", f"leases {name} exists")
            return 201, self.store_lease(body)
        name = rest[1]
        if method == "GET":
            return 200, self.leases[name]
        if method == "PUT":
            stored = self.leases[name]["metadata"]["resourceVersion"]
            if body["metadata"].get("resourceVersion") != stored:
                return 409, self.status_object(409, "Conflict", f"leases {name} was modified")
            return 200, self.store_lease(body)
        del self.leases[name]
        return 200, self.status_object(200, "Success", "deleted")

    def store_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.versions += 1
        lease["metadata"]["resourceVersion"] = str(self.versions)
        self.leases[lease["metadata"]["name"]] = lease
        return lease

    @staticmethod
    def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure" if code >= 400
                else "Success", "code": code, "reason": reason, "message": message}  # fmt: skip

    # --- the Job controller ------------------------------------------------------------

    def create_job(self, job: dict[str, Any]) -> tuple[int, Any]:
        name = job["metadata"]["name"]
        if name in self.jobs:
            return 409, self.status_object(409, "AlreadyExists", f"jobs {name} already exists")
        job["metadata"] |= {"uid": str(uuid.uuid4()), "creationTimestamp": now()}
        job["status"] = {"startTime": now()}
        self.jobs[name] = job
        threading.Thread(target=self.control, args=(name,), daemon=True).start()
        return 201, job

    def add_active_job(self, name: str, labels: dict[str, str]) -> None:
        """A Job someone else started (another daemon, the CronJob) that is still running."""
        with self.lock:
            self.jobs[name] = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
                "spec": {"template": {"spec": {"containers": []}}},
                "status": {"active": 1, "startTime": now()},
            }

    def control(self, name: str) -> None:
        """Run pods until one succeeds, backoffLimit is spent or the deadline passes."""
        job = self.jobs[name]
        spec = job["spec"]
        deadline = time.monotonic() + spec.get("activeDeadlineSeconds", 10**9)
        attempt = 0
        while True:
            with self.lock:
                if name not in self.jobs:
                    return
                pod = self.start_pod(job, attempt)
                job["status"]["active"] = 1
            code = self.wait_pod(pod, deadline)
            with self.lock:
                if name not in self.jobs:
                    return
                status = job["status"]
                status.pop("active", None)
                if code == 0:
                    status["succeeded"] = 1
                    return self.finish(status, "Complete", None, None)
                status["failed"] = status.get("failed", 0) + 1
                if code is None:
                    return self.finish(
                        status, "Failed", "DeadlineExceeded",
                        "Job was active longer than specified deadline",
                    )  # fmt: skip
                if status["failed"] > spec.get("backoffLimit", 6):
                    return self.finish(
                        status, "Failed", "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    )  # fmt: skip
            attempt += 1

    @staticmethod
    def finish(status: dict[str, Any], kind: str, reason: str | None, message: str | None) -> None:
        condition = {"type": kind, "status": "True", "lastTransitionTime": now()}
        if reason:
            condition |= {"reason": reason, "message": message}
        status["conditions"] = [condition]
        if kind == "Complete":
            status["completionTime"] = now()

    # --- the kubelet -----------------------------------------------------------------

    def start_pod(self, job: dict[str, Any], attempt: int) -> Pod:
        job_name = job["metadata"]["name"]
        name = f"{job_name}-{attempt}{uuid.uuid4().hex[:5]}"
        labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": job_name}
        pod = Pod(name, job_name, labels, self.root / "pods" / name)
        self.pods[name] = pod
        spec = job["spec"]["template"]["spec"]
        [container] = spec["containers"]
        uid = spec["securityContext"]["runAsUser"]
        mounts, config_dirs = self.volumes(pod, spec, container, uid)

        # One pass, longest path first. /tmp is left alone: the test's own paths live
        # there, and the pod gets its scratch /tmp through TMPDIR instead.
        named = {path: str(d) for path, d in mounts.items() if path != "/tmp"}
        pattern = re.compile("|".join(re.escape(p) for p in sorted(named, key=len, reverse=True)))

        def translate(text: str) -> str:
            return pattern.sub(lambda m: named[m.group(0)], text)

        for directory in config_dirs:  # a ConfigMap's text names mount paths too
            for file in directory.iterdir():
                file.write_text(translate(file.read_text()))
        env = {e["name"]: translate(e["value"]) for e in container.get("env", [])}
        entrypoint = Path(sys.executable).parent / container["command"][0]
        pod.log.parent.mkdir(parents=True, exist_ok=True)
        with pod.log.open("wb") as log:
            pod.process = subprocess.Popen(
                ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 str(entrypoint), *container["args"]],
                stdout=log, stderr=subprocess.STDOUT, cwd=mounts["/tmp"],
                env={"PATH": os.environ["PATH"], "HOME": str(mounts["/tmp"]),
                     "TMPDIR": str(mounts["/tmp"]), **env},
            )  # fmt: skip
        pod.phase = "Running"
        return pod

    def volumes(
        self, pod: Pod, spec: dict[str, Any], container: dict[str, Any], uid: int
    ) -> tuple[dict[str, Path], list[Path]]:
        """Each mounted volume as a directory of the pod, owned by the pod's user;
        and the ConfigMap ones."""
        by_name = {v["name"]: v for v in spec["volumes"]}
        mounts, config_dirs = {}, []
        for mount in container["volumeMounts"]:
            volume = by_name[mount["name"]]
            directory = pod.root / "volumes" / mount["name"]
            directory.mkdir(parents=True)
            files = {}
            if "configMap" in volume:
                files = self.config_maps[volume["configMap"]["name"]]
                config_dirs.append(directory)
            elif "secret" in volume:
                files = self.secrets[volume["secret"]["secretName"]]
            # As the kubelet does: a volume's files belong to root; with an fsGroup, their
            # group is the fsGroup, which may read them (Secrets: at least 0440).
            fs_group = spec["securityContext"].get("fsGroup")
            default_mode = volume.get("secret", {}).get("defaultMode", 0o644)
            for key, value in files.items():
                (directory / key).write_text(value)
                (directory / key).chmod(default_mode | (0o440 if fs_group is not None else 0))
                os.chown(directory / key, 0, fs_group if fs_group is not None else 0)
            os.chown(directory, uid, uid)
            mounts[mount["mountPath"]] = directory
        pod.root.chmod(0o755)
        return mounts, config_dirs

    def wait_pod(self, pod: Pod, deadline: float) -> int | None:
        """The exit code, or None when the deadline killed the pod."""
        assert pod.process is not None
        while True:
            code = pod.process.poll()
            if code is not None:
                pod.phase = "Succeeded" if code == 0 else "Failed"
                return code
            if time.monotonic() > deadline:
                self.terminate(pod)
                pod.phase = "Failed"
                return None
            time.sleep(0.05)

    def terminate(self, pod: Pod) -> None:
        """SIGTERM, then SIGKILL after the grace period, as a kubelet does."""
        if pod.process is None or pod.process.poll() is not None:
            return
        pod.process.send_signal(signal.SIGTERM)
        try:
            pod.process.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pod.process.kill()
            pod.process.wait()

    def delete_job(self, name: str, policy: str | None) -> None:
        self.deletions.append((name, policy))
        del self.jobs[name]
        if policy in ("Background", "Foreground"):
            for pod in [p for p in self.pods.values() if p.job == name]:
                threading.Thread(target=self.remove_pod, args=(pod,), daemon=True).start()

    def remove_pod(self, pod: Pod) -> None:
        self.terminate(pod)
        with self.lock:
            self.pods.pop(pod.name, None)
        shutil.rmtree(pod.root, ignore_errors=True)

    # --- for the tests ---------------------------------------------------------------

    def running_pods(self) -> list[str]:
        with self.lock:
            return [p.name for p in self.pods.values() if p.process and p.process.poll() is None]

    def close(self) -> None:
        self.server.shutdown()
        for pod in list(self.pods.values()):
            with contextlib.suppress(Exception):
                self.terminate(pod)
