"""Federation key and signature compatibility with Synapse's signing library.

Runs target/debug/presenced twice and checks, with signedjson (what Synapse
uses for its key files, key server answers and request signatures):

1. a key file presenced generates is read by signedjson, and presenced's
   GET /_matrix/key/v2/server verifies with the key it lists;
2. a key file signedjson writes (a Synapse server's key) is served by
   presenced unchanged;
3. a federation request signed by signedjson with that key, with the
   X-Matrix header in the spec's quoted form, is accepted; a tampered body
   or another destination gets 401 M_UNAUTHORIZED.

The requests of 3 come from presenced's own server name: without a
federation client the only key presenced can know is its own. Real peers
are covered by the Synapse interop script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from signedjson.key import (
    decode_verify_key_bytes,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    read_signing_keys,
    write_signing_keys,
)
from signedjson.sign import sign_json, verify_signed_json
from unpaddedbase64 import decode_base64

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("PRESENCED_BIN", ROOT / "target" / "debug" / "presenced"))
SERVER_NAME = "keys.test"
START_TIMEOUT_S = 30.0


def log(msg: str) -> None:
    print(msg, flush=True)


class Server:
    """presenced on port 0; its address is read from its JSON log."""

    def __init__(self, tmp: Path, extra_config: str = "") -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        config = tmp / "homeserver.yaml"
        config.write_text(
            f'server_name: "{SERVER_NAME}"\n'
            "listeners:\n"
            "  - port: 0\n"
            '    bind_addresses: ["127.0.0.1"]\n'
            f'data_dir: "{self.data}"\n'
            "log:\n  format: json\n  level: info\n" + extra_config
        )
        self.log_path = tmp / "presenced.log"
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        self.proc = subprocess.Popen(
            [str(BINARY), "--config", str(config)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"presenced exited with {self.proc.returncode}: {self.log_path.read_text()}")
            addr = self._listening_addr()
            if addr:
                self.base = f"http://{addr}"
                return
            if time.monotonic() > deadline:
                raise RuntimeError("presenced did not log its listening address")
            time.sleep(0.05)

    def _listening_addr(self) -> str | None:
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "listening" and "addr" in fields:
                return fields["addr"]
        return None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def check_key_server(server: Server, signing_key) -> None:
    status, answer = server.request("GET", "/_matrix/key/v2/server")
    assert status == 200, answer
    assert answer["server_name"] == SERVER_NAME, answer
    assert answer["valid_until_ts"] > time.time() * 1000, answer
    key_id = f"ed25519:{signing_key.version}"
    listed = answer["verify_keys"][key_id]["key"]
    assert listed == encode_verify_key_base64(get_verify_key(signing_key)), answer
    verify_key = decode_verify_key_bytes(key_id, decode_base64(listed))
    verify_signed_json(answer, SERVER_NAME, verify_key)
    log(f"key server answer for {key_id} verifies with signedjson")


def signed_put(server: Server, signing_key, txn: str, destination: str = SERVER_NAME, tamper: bool = False):
    uri = f"/_matrix/federation/v1/send/{txn}"
    content = {"origin": SERVER_NAME, "origin_server_ts": int(time.time() * 1000), "pdus": [], "edus": []}
    request = {"method": "PUT", "uri": uri, "origin": SERVER_NAME, "destination": destination, "content": content}
    key_id = f"ed25519:{signing_key.version}"
    sig = sign_json(request, SERVER_NAME, signing_key)["signatures"][SERVER_NAME][key_id]
    header = f'X-Matrix origin="{SERVER_NAME}",destination="{destination}",key="{key_id}",sig="{sig}"'
    if tamper:
        content["origin_server_ts"] += 1
    return server.request(
        "PUT",
        uri,
        json.dumps(content).encode(),
        {"Authorization": header, "Content-Type": "application/json"},
    )


def main() -> int:
    if not BINARY.exists():
        raise RuntimeError(f"{BINARY} not found: run `cargo build --bin presenced`")
    with tempfile.TemporaryDirectory(prefix="presenced-keys-") as tmp:
        tmp = Path(tmp)

        # 1. presenced generates its key; signedjson reads the file.
        (tmp / "a").mkdir()
        server = Server(tmp / "a")
        try:
            with open(server.data / f"{SERVER_NAME}.signing.key") as f:
                generated = read_signing_keys(f)[0]
            log(f"signedjson read presenced's generated key file ({generated.version})")
            check_key_server(server, generated)
        finally:
            server.stop()

        # 2. A key file written by signedjson (as Synapse's) is served as is.
        (tmp / "b").mkdir()
        key_file = tmp / "b" / "synapse.signing.key"
        synapse_key = generate_signing_key("a_syn1")
        with open(key_file, "w") as f:
            write_signing_keys(f, [synapse_key])
        server = Server(tmp / "b", f'signing_key_path: "{key_file}"\n')
        try:
            check_key_server(server, synapse_key)

            # 3. Requests signed by signedjson.
            status, answer = signed_put(server, synapse_key, "sj1")
            assert (status, answer) == (200, {"pdus": {}}), (status, answer)
            log("request signed by signedjson: 200")
            status, answer = signed_put(server, synapse_key, "sj2", tamper=True)
            assert status == 401 and answer["errcode"] == "M_UNAUTHORIZED", (status, answer)
            log("tampered body: 401 M_UNAUTHORIZED")
            status, answer = signed_put(server, synapse_key, "sj3", destination="elsewhere.test")
            assert status == 401 and answer["errcode"] == "M_UNAUTHORIZED", (status, answer)
            log("other destination: 401 M_UNAUTHORIZED")
        finally:
            server.stop()
    log("signedjson compatibility: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
