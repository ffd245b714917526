"""End-to-end tests of `python -m lm1b.download`, fully offline.

A small synthetic release (three shards) is built in tmp_path, packed as a tarball and served by
a local HTTP server on 127.0.0.1; the expected-MD5 table is injected with `--md5-file`.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import lm1b.data.archive
from lm1b.commands import download as cli
from lm1b.commands.download import TREE_NAME
from lm1b.data import verify
from lm1b.data.fetch import download

TARBALL = f"{TREE_NAME}.tar.gz"
SHARDS = {
    "training-monolingual.tokenized.shuffled/news.en-00001-of-00100": "the cat sat on the mat .\n"
    * 40,
    "training-monolingual.tokenized.shuffled/news.en-00002-of-00100": "a dog ran to the cat .\n"
    * 40,
    "heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050": "the bird sat .\n"
    * 20,
}
CORRUPT = "training-monolingual.tokenized.shuffled/news.en-00002-of-00100"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib honours *_proxy variables; the tests must talk to 127.0.0.1 directly."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def md5_file(tmp_path) -> Path:
    """The expected-MD5 table of the synthetic release."""
    path = tmp_path / "md5sums.txt"
    lines = [f"{hashlib.md5(text.encode()).hexdigest()}  {name}" for name, text in SHARDS.items()]
    path.write_text("# synthetic release\n" + "\n".join(lines) + "\n")
    return path


def make_tarball(shards: dict[str, str], extra: list[tarfile.TarInfo] = ()) -> bytes:
    """A gzipped tarball laid out like the official release, plus any `extra` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in shards.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{TREE_NAME}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size))
    return buffer.getvalue()


def write_tree(root: Path, shards: dict[str, str]) -> Path:
    for name, text in shards.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


class Server(ThreadingHTTPServer):
    """Serves `payload` at /TARBALL; `mode` picks a behaviour; `ranges` logs each Range header."""

    def __init__(self, payload: bytes, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.payload, self.mode, self.ranges = payload, mode, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/{TARBALL}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        self.server.ranges.append(header)
        if self.path != f"/{TARBALL}":
            self.send_error(404)
            return
        data = self.server.payload
        start = 0 if not header or self.server.mode == "ignore-range" else int(header[6:-1])
        if start >= len(data) and header:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.server.mode == "drop-once" and len(self.server.ranges) == 1:
            self.wfile.write(data[: len(data) // 2])  # then the connection closes early
            return
        self.wfile.write(data[start:])

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def serve() -> Iterator:
    """serve(payload, mode="range") starts a server on 127.0.0.1 and returns it."""
    servers = []

    def start(payload: bytes, mode: str = "range") -> Server:
        server = Server(payload, mode)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run(dest: Path, md5_file: Path, *extra: str) -> int:
    return cli.main(["--dest", str(dest), "--md5-file", str(md5_file), "--retry-wait", "0", *extra])


def assert_ready(dest: Path) -> None:
    for name, text in SHARDS.items():
        assert (dest / TREE_NAME / name).read_text() == text
    assert (dest / "VERIFIED").is_file()
    assert not list(dest.glob(".*.extracting")), "temporary extraction tree left behind"


def test_download_extract_verify(tmp_path, md5_file, serve, capsys):
    server = serve(make_tarball(SHARDS))
    dest = tmp_path / "lm1b"
    assert run(dest, md5_file, "--url", server.url, "--no-vocab") == 0
    assert_ready(dest)
    assert (dest / TARBALL).read_bytes() == server.payload
    assert not (dest / f"{TARBALL}.part").exists()
    assert "3 of 3 shards OK" in capsys.readouterr().out


def test_resumes_partial_download(tmp_path, md5_file, serve):
    server = serve(make_tarball(SHARDS))
    dest = tmp_path / "lm1b"
    dest.mkdir()
    (dest / f"{TARBALL}.part").write_bytes(server.payload[:100])
    assert run(dest, md5_file, "--url", server.url, "--no-vocab") == 0
    assert server.ranges == ["bytes=100-"]
    assert (dest / TARBALL).read_bytes() == server.payload


def test_dropped_connection_is_resumed(tmp_path, serve):
    server = serve(make_tarball(SHARDS), mode="drop-once")
    target = download(server.url, tmp_path / TARBALL, retries=2, retry_wait=0)
    assert server.ranges == [None, f"bytes={len(server.payload) // 2}-"]
    assert target.read_bytes() == server.payload


def test_server_ignoring_range_restarts_cleanly(tmp_path, serve):
    server = serve(make_tarball(SHARDS), mode="ignore-range")
    (tmp_path / f"{TARBALL}.part").write_bytes(b"stale bytes from another file")
    target = download(server.url, tmp_path / TARBALL, retries=0)
    assert target.read_bytes() == server.payload


def test_complete_partial_file_is_accepted(tmp_path, serve):
    server = serve(make_tarball(SHARDS))
    (tmp_path / f"{TARBALL}.part").write_bytes(server.payload)
    assert download(server.url, tmp_path / TARBALL, retries=0).read_bytes() == server.payload
    assert server.ranges == [f"bytes={len(server.payload)}-"]


def test_http_error_is_one_clear_line(tmp_path, md5_file, serve, capsys):
    server = serve(b"")
    url = server.url.replace(TARBALL, "missing.tar.gz")
    assert run(tmp_path / "lm1b", md5_file, "--url", url) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and url in error and "HTTP 404" in error
    assert server.ranges == [None], "a 404 must not be retried"


def test_corrupt_shard_is_reported_by_name(tmp_path, md5_file, serve, capsys):
    server = serve(make_tarball({**SHARDS, CORRUPT: "tampered text .\n"}))
    dest = tmp_path / "lm1b"
    assert run(dest, md5_file, "--url", server.url, "--no-vocab") == 1
    out = capsys.readouterr().out
    assert f"CORRUPT  {CORRUPT}" in out and "1 corrupt" in out
    assert not (dest / "VERIFIED").exists()


def test_missing_shard_is_reported_by_name(tmp_path, md5_file, capsys):
    missing = "heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050"
    tarball = tmp_path / TARBALL
    tarball.write_bytes(make_tarball({k: v for k, v in SHARDS.items() if k != missing}))
    assert run(tmp_path / "lm1b", md5_file, "--from", str(tarball), "--no-vocab") == 1
    assert f"MISSING  {missing}" in capsys.readouterr().out


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member(f"{TREE_NAME}/../../escaped"),
        _member("/tmp/lm1b-test-absolute-escape"),
        _member(f"{TREE_NAME}/link", tarfile.SYMTYPE, "../../escaped"),
        _member(f"{TREE_NAME}/link", tarfile.LNKTYPE, "/etc/passwd"),
        _member(f"{TREE_NAME}/device", tarfile.CHRTYPE),
        # A link that stays inside by text (d1/d2/d3/.. is d1/d2) but climbs out on disk once
        # an earlier member made one of its components a symbolic link: any `..` is refused.
        _member(f"{TREE_NAME}/d1/d2/d3/x", tarfile.SYMTYPE, "../../../.."),
        _member(f"{TREE_NAME}/h", tarfile.LNKTYPE, f"{TREE_NAME}/d1/x/../../passwd"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "hardlink-out", "device", "chain", "chain-link"],
)
def test_unsafe_tarball_is_rejected(tmp_path, md5_file, member, capsys):
    tarball = tmp_path / "archive" / TARBALL
    tarball.parent.mkdir()
    tarball.write_bytes(make_tarball(SHARDS, extra=[member]))
    dest = tmp_path / "out" / "lm1b"
    assert run(dest, md5_file, "--from", str(tarball)) == 2
    assert f"refusing to extract {member.name!r}" in capsys.readouterr().err
    assert not (dest / TREE_NAME).exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["archive", TARBALL, "md5sums.txt", "out", "lm1b"]
    )


def test_write_through_symlink_is_rejected(tmp_path, md5_file, capsys):
    inside_link = _member(f"{TREE_NAME}/dir", tarfile.SYMTYPE, ".")
    through_it = _member(f"{TREE_NAME}/dir/file")
    tarball = tmp_path / TARBALL
    tarball.write_bytes(make_tarball(SHARDS, extra=[inside_link, through_it]))
    assert run(tmp_path / "lm1b", md5_file, "--from", str(tarball)) == 2
    assert "goes through a symbolic link" in capsys.readouterr().err


def test_without_pythons_extraction_filter_nothing_is_extracted(tmp_path, md5_file, capsys):
    """Pythons 3.10.0-3.10.11 and 3.11.0-3.11.3 have no `data` filter: refuse, rather than
    extract with our checks alone."""
    tarball = tmp_path / TARBALL
    tarball.write_bytes(make_tarball(SHARDS))
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(tarfile, "data_filter")
        assert run(tmp_path / "lm1b", md5_file, "--from", str(tarball)) == 2
    assert "has no tarfile extraction filters" in capsys.readouterr().err
    assert not (tmp_path / "lm1b" / TREE_NAME).exists()


def test_a_refusal_by_pythons_filter_is_reported_as_one(tmp_path, md5_file, capsys):
    """With our own checks out of the way, the `data` filter still refuses an escaping member,
    and the message says so (it once read "not a readable tarball")."""
    tarball = tmp_path / TARBALL
    tarball.write_bytes(make_tarball(SHARDS, extra=[_member(f"{TREE_NAME}/../../escaped")]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lm1b.data.archive, "check_members", lambda members: None)
        assert run(tmp_path / "lm1b", md5_file, "--from", str(tarball)) == 2
    error = capsys.readouterr().err
    assert "'data' filter refused a member" in error and "not a readable" not in error
    assert not (tmp_path / "escaped").exists()


def test_corrupt_tarball_is_one_clear_line(tmp_path, md5_file, capsys):
    tarball = tmp_path / TARBALL
    tarball.write_bytes(make_tarball(SHARDS)[:200])
    assert run(tmp_path / "lm1b", md5_file, "--from", str(tarball)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(tarball) in error


def test_from_tarball(tmp_path, md5_file):
    tarball = tmp_path / "downloads" / TARBALL
    tarball.parent.mkdir()
    tarball.write_bytes(make_tarball(SHARDS))
    dest = tmp_path / "lm1b"
    assert run(dest, md5_file, "--from", str(tarball.parent), "--no-vocab") == 0
    assert_ready(dest)
    assert not (dest / TARBALL).exists(), "--from must not copy the tarball"


@pytest.mark.parametrize("level", ["tree", "parent"])
def test_from_tree_links_it_without_modifying_it(tmp_path, md5_file, level):
    source = write_tree(tmp_path / "elsewhere" / TREE_NAME, SHARDS)
    before = sorted(tmp_path.joinpath("elsewhere").rglob("*"))
    dest = tmp_path / "lm1b"
    given = source if level == "tree" else source.parent
    assert run(dest, md5_file, "--from", str(given), "--no-vocab") == 0
    assert_ready(dest)
    assert (dest / TREE_NAME).resolve() == source.resolve()
    assert sorted(tmp_path.joinpath("elsewhere").rglob("*")) == before


def test_rerun_is_idempotent_and_skips_work(tmp_path, md5_file, serve, monkeypatch):
    server = serve(make_tarball(SHARDS))
    dest = tmp_path / "lm1b"
    assert run(dest, md5_file, "--url", server.url, "--no-vocab") == 0

    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(verify, "md5_of", no_hashing)
    assert run(dest, md5_file, "--url", server.url, "--no-vocab") == 0
    assert server.ranges == [None], "the re-run downloaded again"
    assert_ready(dest)


def test_verify_only_rechecks_and_reports_changes(tmp_path, md5_file, capsys):
    dest = tmp_path / "lm1b"
    write_tree(dest / TREE_NAME, SHARDS)
    assert run(dest, md5_file, "--verify-only") == 0
    (dest / TREE_NAME / CORRUPT).write_text("bit rot\n")
    assert run(dest, md5_file, "--verify-only") == 1
    assert f"CORRUPT  {CORRUPT}" in capsys.readouterr().out
    assert not (dest / "VERIFIED").exists()


def test_builds_vocabulary_from_training_shards_once(tmp_path, md5_file, monkeypatch):
    dest = tmp_path / "lm1b"
    write_tree(dest / TREE_NAME, SHARDS)
    assert run(dest, md5_file) == 0
    vocab = (dest / "1b_word_vocab.txt").read_text().splitlines()
    words = {line.split(" ")[0] for line in vocab}
    assert {"the", "cat", "dog", "<S>", "</S>", "<UNK>"} <= words
    assert "bird" not in words, "heldout text leaked into the vocabulary"

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the vocabulary was built again")

    monkeypatch.setattr(cli, "build_vocabulary", no_rebuild)
    assert run(dest, md5_file) == 0


def test_bundled_list_covers_every_tokenized_shard():
    expected = verify.load_expected()
    training = [n for n in expected if n.startswith("training-monolingual.tokenized.shuffled/")]
    heldout = [n for n in expected if n.startswith("heldout-monolingual.tokenized.shuffled/")]
    assert len(training) == 99 and len(heldout) == 51 and len(expected) == 150


@pytest.mark.sample
def test_real_heldout_shards_verify(sample_dir):
    names = [
        f"heldout-monolingual.tokenized.shuffled/news.en.heldout-000{i}-of-00050" for i in (10, 11)
    ]
    expected = {name: digest for name, digest in verify.load_expected().items() if name in names}
    report = verify.verify_tree(sample_dir, expected)
    assert report.passed and report.ok == names
