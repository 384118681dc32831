"""The proto bundled in the package, and the module generated from it, match the repo's contract."""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

import softmaxd_client
from softmaxd_client import softmax_pb2

REPO = Path(__file__).resolve().parents[3]
ROOT_PROTO = REPO / "proto" / "softmax" / "v1" / "softmax.proto"
BUNDLED = Path(__file__).resolve().parents[1] / "src" / "softmaxd_client" / "proto" / "softmax" / "v1" / "softmax.proto"


def test_bundled_proto_is_the_repo_proto():
    assert BUNDLED.read_bytes() == ROOT_PROTO.read_bytes(), (
        "clients/python/src/softmaxd_client/proto is stale: copy proto/softmax/v1/softmax.proto there"
    )


def test_installed_package_ships_the_repo_proto():
    shipped = Path(softmaxd_client.__file__).parent / "proto" / "softmax" / "v1" / "softmax.proto"
    assert shipped.read_bytes() == ROOT_PROTO.read_bytes(), "reinstall the client: pip install ./clients/python"


def test_generated_module_matches_repo_proto():
    pytest.importorskip("grpc_tools")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fds.bin"
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}",
             f"--descriptor_set_out={out}", "softmax/v1/softmax.proto"],
            check=True,
        )
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    compiled = fds.file[0]
    # protoc writes json_name into descriptor sets but not into generated modules.
    for message in compiled.message_type:
        for field in message.field:
            field.ClearField("json_name")
    installed = descriptor_pb2.FileDescriptorProto.FromString(softmax_pb2.DESCRIPTOR.serialized_pb)
    assert compiled == installed
