"""The sidecar image and the deployment files, tested without a Docker engine or a cluster.

What can be checked here is checked for real: the Dockerfile's properties are read from the
Dockerfile itself; the image's entrypoint command line runs in the plain venv against a test
database and answers /healthz, and its HEALTHCHECK command is run as written; the deploy script
submits a folder to a running daemon with curl. The image build itself (the base tag, apt and
PyPI downloads) needs a Docker engine and is not exercised here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml  # type: ignore[import-untyped]

from zdmproxy.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CONFIG = ROOT / "config"
DEPLOY = CONFIG / "deploy.sh"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, RUN ...
    args: str  # the rest of the (joined) line

    def exec_form(self) -> list[str]:
        """A JSON-array argument (ENTRYPOINT ["tini", "--"]); a shell form is split like sh."""
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list)
            return [str(v) for v in value]
        return shlex.split(text)


def dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (the subset we use)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        name, _, args = full.strip().partition(" ")
        instructions.append(Instruction(name.upper(), args.strip()))
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.name == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def final_env(stage: list[Instruction]) -> dict[str, str]:
    """The final stage's ENV (KEY=VALUE pairs; $PATH expanded from ours)."""
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.name == "ENV":
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


def test_two_stages_on_the_same_pinned_base() -> None:
    built = stages(dockerfile())
    assert len(built) == 2, "a build stage and a runtime stage"
    bases = [stage[0].args.split()[0] for stage in built]
    assert bases[0] == bases[1], f"both stages on one base, got {bases}"
    # An exact patch release and Debian release: python:3.11-slim would drift under the lock.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", bases[0]), bases[
        0
    ]
    assert "--from=build" in " ".join(i.args for i in built[1] if i.name == "COPY")


def test_runs_as_a_non_root_numeric_user_under_tini() -> None:
    runtime = stages(dockerfile())[-1]
    users = [i.args for i in runtime if i.name == "USER"]
    assert users, "the runtime stage must switch user"
    uid, _, gid = users[-1].partition(":")
    # Numeric: Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0)), users[-1]
    (entrypoint,) = [i.exec_form() for i in runtime if i.name == "ENTRYPOINT"]
    assert entrypoint[:2] == ["tini", "--"], "tini as PID 1 forwards SIGTERM and reaps children"
    (cmd,) = [i.exec_form() for i in runtime if i.name == "CMD"]
    assert entrypoint[2:] + cmd[:1] == ["zdmproxy", "serve"]
    installs = " ".join(i.args for i in runtime if i.name == "RUN")
    assert re.search(r"\btini=\S+", installs), "tini pinned to an exact Debian version"


def test_dependencies_are_installed_from_the_hash_pinned_lock() -> None:
    build = stages(dockerfile())[0]
    runs = [i.args for i in build if i.name == "RUN"]
    assert any("--require-hashes" in r and "requirements.lock" in r for r in runs)
    assert not any(i.name == "ADD" for i in dockerfile()), "registry packages only: no ADD of URLs"
    locked = _lock_pins(CONFIG / "requirements.lock")
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in pins:
        name, _, version = pin.partition("==")
        assert version, f"pyproject.toml: {pin} is not pinned exactly"
        assert locked.get(_normal(name)) == version, (
            f"{pin} is not what config/requirements.lock holds ({locked.get(_normal(name))}): "
            "run config/lock.sh (it needs pip-tools==7.6.2; see its header)"
        )
    text = (CONFIG / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[a-z0-9])", text.split("\n", 6)[-1]):
        if "==" in block:
            assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"


def _lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^ \\]+)", line)
        if match:
            pins[_normal(match[1])] = match[2]
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_writes_nothing_outside_tmp_and_checks_health_without_curl() -> None:
    runtime = stages(dockerfile())[-1]
    env = final_env(runtime)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc written at run time (read-only root)"
    assert env.get("HOME") == "/tmp" and env.get("TMPDIR") == "/tmp"
    (check,) = [i.args for i in runtime if i.name == "HEALTHCHECK"]
    assert "/healthz" in check and "curl" not in check and "CMD" in check


def healthcheck_command() -> list[str]:
    (check,) = [i.args for i in stages(dockerfile())[-1] if i.name == "HEALTHCHECK"]
    return json.loads(check[check.index("CMD") + 3 :].strip())  # type: ignore[no-any-return]


def test_example_settings_document_every_setting_and_load() -> None:
    text = (CONFIG / "zdmproxy.toml").read_text()
    missing = [name for name in Settings.model_fields if not re.search(rf"^#? ?{name} =", text, re.M)]
    assert not missing, f"config/zdmproxy.toml does not document {missing}"
    result = subprocess.run(
        [sys.executable, "-c", "from zdmproxy.settings import load_settings; load_settings()"],
        env={**os.environ, "ZDM_CONFIG": str(CONFIG / "zdmproxy.toml")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _containers(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []), spec["containers"], spec


def test_kubernetes_sidecar_is_native_and_locked_down() -> None:
    docs = list(yaml.safe_load_all((CONFIG / "kubernetes" / "sidecar.yaml").read_text()))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    init, containers, spec = _containers(deployment)
    (sidecar,) = [c for c in init if c["name"] == "zdmproxy"]
    assert sidecar["restartPolicy"] == "Always", "an init container with restartPolicy Always: native sidecar"
    assert containers, "next to an application container"
    port = str(sidecar["args"][sidecar["args"].index("--port") + 1])
    for probe in ("startupProbe", "readinessProbe"):
        command = " ".join(sidecar[probe]["exec"]["command"])
        assert f"127.0.0.1:{port}/readyz" in command, f"{probe} asks /readyz on the daemon's port"
    security = sidecar["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert "/tmp" in mounts, "a writable /tmp on the read-only root"
    env = {e["name"]: e for e in sidecar["env"]}
    token_dir = os.path.dirname(env["ZDM_TOKEN_FILE"]["value"])
    (volume,) = [v for v in spec["volumes"] if v["name"] == mounts[token_dir]]
    assert "secret" in volume, "the token comes from a Secret"
    assert "secretKeyRef" in env["ZDM_DATABASE_URL"]["valueFrom"]


def test_migration_job_is_a_helm_and_argocd_hook() -> None:
    (job,) = yaml.safe_load_all((CONFIG / "kubernetes" / "migrate-job.yaml").read_text())
    annotations = job["metadata"]["annotations"]
    assert "pre-upgrade" in annotations["helm.sh/hook"]
    assert annotations["argocd.argoproj.io/hook"] == "PreSync"
    init, containers, _ = _containers(job)
    assert [c["restartPolicy"] for c in init] == ["Always"]
    (deploy,) = containers
    assert "deploy.sh" in " ".join(deploy["command"])
    failing = job["spec"]["podFailurePolicy"]["rules"][0]
    assert failing["action"] == "FailJob" and 1 in failing["onExitCodes"]["values"]


# -- the image's command line, for real -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def image_command(dsn: str, port: int) -> tuple[list[str], dict[str, str]]:
    """ENTRYPOINT + CMD of the image, minus tini, with this venv's zdmproxy, plus --dsn/--port;
    and the image's environment (its PORT matching the one we listen on)."""
    runtime = stages(dockerfile())[-1]
    (entrypoint,) = [i.exec_form() for i in runtime if i.name == "ENTRYPOINT"]
    (cmd,) = [i.exec_form() for i in runtime if i.name == "CMD"]
    argv = entrypoint[2:] + cmd
    argv[0] = str(VENV_BIN / argv[0])
    env = {**os.environ, **final_env(runtime), "ZDM_LISTEN_PORT": str(port)}
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    env.pop("ZDM_CONFIG", None)
    return [*argv, "--dsn", dsn, "--port", str(port)], env


def _serve_available() -> bool:
    result = subprocess.run(
        [str(VENV_BIN / "zdmproxy"), "serve", "--help"], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


needs_serve = pytest.mark.skipif(not _serve_available(), reason="`zdmproxy serve` is not built yet")


# The command with the root filesystem read-only and a fresh tmpfs on /tmp, as Kubernetes'
# readOnlyRootFilesystem with an emptyDir on /tmp: a private mount namespace, nothing changes
# outside it (needs root or CAP_SYS_ADMIN, as CI has; skipped otherwise). A checkout that itself
# lives under /tmp (its venv, the editable install) is carried over the tmpfs, read-only too.
_KEEP = str(ROOT) if ROOT.is_relative_to("/tmp") else ""
READ_ONLY_ROOT = [
    "unshare",
    "--mount",
    "sh",
    "-c",
    "mount --make-rprivate / && "
    '{ [ -z "$0" ] || mount --bind "$0" /mnt; } && '
    "mount -o remount,bind,ro / && mount -t tmpfs tmpfs /tmp && "
    '{ [ -z "$0" ] || { mkdir -p "$0" && mount --bind /mnt "$0" && mount -o remount,bind,ro "$0"; }; } && '
    'exec "$@"',
    _KEEP,
]


def _read_only_root_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*READ_ONLY_ROOT, "true"], capture_output=True, timeout=30).returncode == 0


needs_read_only_root = pytest.mark.skipif(
    not _read_only_root_available(), reason="cannot remount / read-only in a mount namespace (unshare)"
)


@asynccontextmanager
async def daemon(
    dsn: str, tmp_path: Path, *extra: str, read_only_root: bool = False
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The image's command (plus ``extra`` arguments) running; yields its URL and environment,
    stops it with SIGTERM."""
    port = _free_port()
    argv, env = image_command(dsn, port)
    argv += extra
    if read_only_root:
        argv = [*READ_ONLY_ROOT, *argv]  # HOME and TMPDIR are the image's /tmp, a tmpfs there
    else:
        env["HOME"] = env["TMPDIR"] = str(tmp_path)  # the image's /tmp
    log = (tmp_path / "daemon.log").open("wb")
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60):
            while True:
                assert proc.returncode is None, (tmp_path / "daemon.log").read_text()
                try:
                    if (await asyncio.to_thread(_get, f"{url}/healthz"))[0] == 200:
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
        yield url, env
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


@needs_serve
async def test_image_command_serves_healthz_and_its_healthcheck_passes(dsn: str, tmp_path: Path) -> None:
    async with daemon(dsn, tmp_path) as (url, env):
        status, body = await asyncio.to_thread(_get, f"{url}/healthz")
        assert status == 200, body
        check = await asyncio.create_subprocess_exec(*healthcheck_command(), env=env)
        assert await asyncio.wait_for(check.wait(), 30) == 0, "the image's HEALTHCHECK command as written"
    # Stopped: the same HEALTHCHECK now fails, so it checks something.
    check = await asyncio.create_subprocess_exec(
        *healthcheck_command(), env=env, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(check.wait(), 30) != 0


def _put(url: str, sql: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps({"sql": sql}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@needs_serve
@needs_read_only_root
async def test_image_command_works_on_a_read_only_root(dsn: str, tmp_path: Path) -> None:
    probe = ROOT / "read-only-probe"
    argv = [*READ_ONLY_ROOT, sys.executable, "-c", f"open({str(probe)!r}, 'w')"]
    wrote = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=60)
    assert wrote.returncode != 0 and not probe.exists(), "the wrapper really makes the root read-only"
    async with daemon(dsn, tmp_path, read_only_root=True) as (url, _):
        status, body = await asyncio.to_thread(
            _put, f"{url}/v1/migrations/ro?wait=30", "CREATE TABLE ro (id int PRIMARY KEY);"
        )
        assert status == 201 and body["state"] == "succeeded", body
        status, ready = await asyncio.to_thread(_get, f"{url}/readyz")
        assert status == 200, ready
    log = (tmp_path / "daemon.log").read_text()
    assert "Read-only file system" not in log and "Traceback" not in log, log


# -- the deploy script, against a running daemon ------------------------------------------------

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

FOLDER = {
    "V1__accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, email text);",
    # V2 before V10: versions compare as numbers (V10 needs V2's column).
    "V2__plan.sql": 'ALTER TABLE accounts ADD COLUMN plan text;\n-- "quotes", a \\ backslash,\ta tab',
    "V10__plan_index.sql": "CREATE INDEX CONCURRENTLY accounts_plan_idx ON accounts (plan);",
    "README.md": "not a migration",
}


async def _deploy(folder: Path, url: str, tmp_path: Path, **more: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "ZDMPROXY_URL": url, "ZDMPROXY_WAIT_S": "60", "TMPDIR": str(tmp_path)}
    env.update(more)
    return await asyncio.to_thread(
        subprocess.run, ["sh", str(DEPLOY), str(folder)], env=env, capture_output=True, text=True, timeout=100
    )


@needs_curl
@needs_serve
async def test_deploy_script_submits_a_folder_in_version_order(dsn: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name, sql in FOLDER.items():
        (folder / name).write_text(sql)
    async with daemon(dsn, tmp_path) as (url, _):
        done = await _deploy(folder, url, tmp_path)
        assert done.returncode == 0, done.stderr
        conn = await asyncpg.connect(dsn)
        try:
            order = await conn.fetch("SELECT id, state FROM zdmproxy.migrations ORDER BY created_at")
            valid = await conn.fetchval(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'accounts_plan_idx'::regclass"
            )
        finally:
            await conn.close()
        assert [(r["id"], r["state"]) for r in order] == [
            ("V1__accounts", "succeeded"),
            ("V2__plan", "succeeded"),
            ("V10__plan_index", "succeeded"),
        ]
        assert valid is True

        # A failed migration fails the deploy, with PostgreSQL's own error; what succeeded is
        # not run again (the same SQL under the same id is the same migration).
        (folder / "V11__orders.sql").write_text(
            "CREATE TABLE orders (id bigint PRIMARY KEY, account bigint REFERENCES nowhere (id));"
        )
        failed = await _deploy(folder, url, tmp_path)
        assert failed.returncode == 1, failed.stderr
        (last,) = [line for line in failed.stderr.splitlines() if "V11__orders: failed" in line]
        assert 'relation "nowhere" does not exist (SQLSTATE 42P01)' in last
        assert "V1__accounts: succeeded" in failed.stderr

        # Same id, different SQL: refused with exit 3, nothing run.
        (folder / "V2__plan.sql").write_text("ALTER TABLE accounts ADD COLUMN plan2 text;")
        conflict = await _deploy(folder, url, tmp_path)
        assert conflict.returncode == 3, conflict.stderr


@needs_curl
async def test_deploy_script_without_a_daemon_exits_69(tmp_path: Path) -> None:
    (tmp_path / "V1__x.sql").write_text("SELECT 1;")
    result = await _deploy(tmp_path, f"http://127.0.0.1:{_free_port()}", tmp_path)
    assert result.returncode == 69 and "daemon unreachable" in result.stderr


@needs_curl
async def test_deploy_script_refuses_two_files_with_one_version(tmp_path: Path) -> None:
    (tmp_path / "V1__x.sql").write_text("SELECT 1;")
    (tmp_path / "V1.0__y.sql").write_text("SELECT 1;")
    (tmp_path / "V01__z.sql").write_text("SELECT 1;")
    result = await _deploy(tmp_path, f"http://127.0.0.1:{_free_port()}", tmp_path)
    assert result.returncode == 2 and "same version" in result.stderr


@needs_curl
@needs_serve
async def test_deploy_script_sends_the_token_from_its_file(dsn: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_init.sql").write_text("CREATE TABLE guarded (id int PRIMARY KEY);")
    async with daemon(dsn, tmp_path, "--token-file", str(token)) as (url, _):
        refused = await _deploy(folder, url, tmp_path)
        assert refused.returncode == 78 and "refused the token" in refused.stderr
        done = await _deploy(folder, url, tmp_path, ZDMPROXY_TOKEN_FILE=str(token))
        assert done.returncode == 0, done.stderr
        assert "0123456789abcdef" not in done.stderr
