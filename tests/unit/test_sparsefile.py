import io
import os

import pytest

from one_drivers.core.sparsefile import Truncated, read_stream, receive_file, send_file


def sparse_file(path, size, pieces):
    with open(path, "wb") as fh:
        for offset, data in pieces:
            fh.seek(offset)
            fh.write(data)
        fh.truncate(size)


def test_round_trip_keeps_content_and_holes(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    pieces = [(0, os.urandom(5000)), (9 << 20, os.urandom(70000))]
    sparse_file(src, 16 << 20, pieces)
    stream = io.BytesIO()
    send_file(str(src), stream)
    assert len(stream.getvalue()) < 100_000  # the 16 MiB of holes did not travel
    stream.seek(0)
    assert receive_file(stream, str(dst)) == 16 << 20
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 < 1 << 20


def test_a_cut_stream_is_refused_and_leaves_nothing(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    sparse_file(src, 1 << 20, [(0, os.urandom(4096))])
    stream = io.BytesIO()
    send_file(str(src), stream)
    cut = io.BytesIO(stream.getvalue()[:-20])
    with pytest.raises(Truncated):
        receive_file(cut, str(dst))
    assert not dst.exists() and not (tmp_path / "dst.one-drivers-tmp").exists()
    with pytest.raises(Truncated, match="not a one-drivers sparse stream"):
        read_stream(io.BytesIO(b"garbage-garbage"))


def test_a_local_system_datastore_is_marked_for_monitoring(tmp_path):
    from one_drivers.core.sparsefile import main, mark_for_monitoring

    disk = tmp_path / "datastores" / "0" / "42" / "disk.0"
    disk.parent.mkdir(parents=True)
    mark_for_monitoring(str(disk), "ssh")
    assert (tmp_path / "datastores" / "0" / ".monitor").read_text() == "ssh\n"
    (tmp_path / "datastores" / "0" / ".monitor").write_text("qcow2\n")
    mark_for_monitoring(str(disk), "ssh")  # a mark already there is the operator's: kept
    assert (tmp_path / "datastores" / "0" / ".monitor").read_text() == "qcow2\n"
    assert main(["receive", str(disk), "--monitor"]) == 2
    assert main(["receive", str(disk), "--other", "ssh"]) == 2


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path):
    src, dst, victim = tmp_path / "src", tmp_path / "dst", tmp_path / "victim"
    sparse_file(src, 4096, [(0, b"x" * 4096)])
    victim.write_bytes(b"keep me")
    (tmp_path / "dst.one-drivers-tmp").symlink_to(victim)
    stream = io.BytesIO()
    send_file(str(src), stream)
    stream.seek(0)
    with pytest.raises(OSError):
        receive_file(stream, str(dst))
    assert victim.read_bytes() == b"keep me" and not dst.exists()
    # positive control: the same stream with no symlink there is written
    (tmp_path / "dst.one-drivers-tmp").unlink()
    stream.seek(0)
    assert receive_file(stream, str(dst)) == 4096
