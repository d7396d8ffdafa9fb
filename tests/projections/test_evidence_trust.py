"""`upm evidence verify` believes only keys it is given: a pack re-signed with a fresh key (the key
inside it swapped) is intact, but UNTRUSTED (exit 4) unless that very key is given."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_audit_and_evidence import pack, sign_head
from upm_history import History, happy

from events import signing
from services.auditor import evidence
from upm.cli import main
from upm.commands import reading


def upm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # click refusing a flag
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def forge(data: bytes, forger: signing.Signer) -> bytes:
    """What an attacker without UPM's key can do: rewrite a content file, re-sign the log head and
    the manifest with their own key, and put that key into the manifest."""
    files = evidence.read_pack(data)
    files["approvals.json"] = b'[{"actor": "mallory", "type": "approval.granted"}]\n'
    proof = json.loads(files["proof.json"])
    head = proof["head"]
    head["key_id"] = forger.key_id
    head["signature"] = forger.sign(signing.head_message(head["size"], head["root"], head["signed_at"],
                                                         forger.key_id))
    files["proof.json"] = json.dumps(proof).encode()
    manifest = json.loads(files["manifest.json"])
    manifest.update(log_head=head, key_id=forger.key_id, public_key=forger.public_hex)
    for name in ("approvals.json", "proof.json"):
        manifest["files"][name] = "sha256:" + hashlib.sha256(files[name]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    files["manifest.sig"] = forger.sign(files["manifest.json"]).encode()
    return evidence._tar(files)


@pytest.fixture
def packs(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "data"
    signer = signing.load_or_create(data)  # UPM's key, in its data folder
    forger = signing.Signer.generate()
    h = History()
    c = happy(h)
    genuine = pack(h, c.change_id, sign_head(h, signer), signer)
    out = {"data": data, "empty": tmp_path / "empty", "genuine": tmp_path / "genuine.tar",
           "forged": tmp_path / "forged.tar", "real_key": signer.public_hex, "forger_key": forger.public_hex}
    out["empty"].mkdir()
    out["genuine"].write_bytes(genuine)
    out["forged"].write_bytes(forge(genuine, forger))
    return out  # type: ignore[return-value]


def test_a_re_signed_pack_is_untrusted_without_keys_and_passes_only_with_its_own_key(
    capsys: pytest.CaptureFixture[str], packs: dict[str, Path]
) -> None:
    forged = str(packs["forged"])
    code, out, err = upm(capsys, "evidence", "verify", forged, "--data", str(packs["empty"]))
    assert code == reading.UNTRUSTED and "OK" not in out  # printed OK, exit 0 before: the key inside was believed
    assert "UNTRUSTED" in err and "not one of the trusted keys" in err and "Traceback" not in err
    code, _, err = upm(capsys, "evidence", "verify", forged, "--data", str(packs["data"]))
    assert code == reading.UNTRUSTED and "UNTRUSTED" in err
    code, _, err = upm(capsys, "evidence", "verify", forged, "--public-key", str(packs["real_key"]))
    assert code == reading.UNTRUSTED
    code, out, _ = upm(capsys, "evidence", "verify", forged, "--public-key", str(packs["forger_key"]))
    assert code == 0 and "OK" in out  # intact, and signed by exactly the key given


def test_the_genuine_pack_passes_with_any_source_of_the_right_key(
    capsys: pytest.CaptureFixture[str], packs: dict[str, Path], tmp_path: Path
) -> None:
    genuine = str(packs["genuine"])
    assert upm(capsys, "evidence", "verify", genuine, "--data", str(packs["data"]))[0] == 0
    assert upm(capsys, "evidence", "verify", genuine, "--public-key", str(packs["real_key"]).upper())[0] == 0
    trust = tmp_path / "upm.pub"
    trust.write_text(f"# the production UPM\n{packs['real_key']}\n")
    assert upm(capsys, "evidence", "verify", genuine, "--trust", str(trust))[0] == 0
    other = packs["empty"] / "trust"
    other.mkdir()
    (other / "prod.pub").write_text(f"{packs['real_key']}\n")
    assert upm(capsys, "evidence", "verify", genuine, "--data", str(packs["empty"]))[0] == 0
    code, _, err = upm(capsys, "evidence", "verify", genuine, "--trust", str(trust), "--public-key",
                       str(packs["forger_key"]))
    assert code == 0  # either given key may have signed
    (other / "prod.pub").unlink()
    code, _, err = upm(capsys, "evidence", "verify", genuine, "--data", str(packs["empty"]))
    assert code == reading.UNTRUSTED and "UNTRUSTED" in err  # intact, but nothing says whose key that is


def test_a_bad_signature_is_not_untrusted_but_failed(capsys: pytest.CaptureFixture[str],
                                                     packs: dict[str, Path]) -> None:
    files = evidence.read_pack(packs["forged"].read_bytes())
    sig = bytearray(files["manifest.sig"])
    sig[0] = ord("0") if sig[0] != ord("0") else ord("1")
    files["manifest.sig"] = bytes(sig)
    packs["forged"].write_bytes(evidence._tar(files))
    code, _, err = upm(capsys, "evidence", "verify", str(packs["forged"]), "--public-key", str(packs["forger_key"]))
    assert code == 1 and "signature does not verify" in err


@pytest.mark.parametrize("argv", [
    ["--public-key", "zz"], ["--public-key", "ab" * 31], ["--trust", "/dev/zero"], ["--trust", "/"],
])
def test_bad_keys_are_refused_with_a_message(capsys: pytest.CaptureFixture[str], packs: dict[str, Path],
                                             argv: list[str]) -> None:
    code, _, err = upm(capsys, "evidence", "verify", str(packs["genuine"]), *argv)
    assert code == 2 and "upm" in err and "Traceback" not in err


def test_hostile_pack_members_are_refused_naming_the_file(capsys: pytest.CaptureFixture[str],
                                                          packs: dict[str, Path]) -> None:
    files = evidence.read_pack(packs["genuine"].read_bytes())
    for body in (b"[" * 5000, b'{"files": {}, "files": {}}', b"\xff\xfe", b'{"files": 3}'):
        packs["forged"].write_bytes(evidence._tar({**files, "manifest.json": body}))
        code, _, err = upm(capsys, "evidence", "verify", str(packs["forged"]), "--data", str(packs["data"]))
        assert code == 1 and "manifest.json" in err and "Traceback" not in err
