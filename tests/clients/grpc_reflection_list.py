"""Lists a gRPC server's services through server reflection over TLS, trusting only the CA given:
what `grpcurl -cacert CA HOST:PORT list` does, with the official gRPC library (grpcio) in place of
grpcurl, which no package registry this project uses carries.

usage: grpc_reflection_list.py HOST:PORT CA_PEM [SERVER_NAME]
Prints one service name a line; exits non-zero when the call fails.
"""

import sys

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main() -> int:
    target, ca_path = sys.argv[1], sys.argv[2]
    with open(ca_path, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = []
    if len(sys.argv) > 3:
        options.append(("grpc.ssl_target_name_override", sys.argv[3]))
    with grpc.secure_channel(target, credentials, options=options) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        for response in stub.ServerReflectionInfo(iter([request]), timeout=10):
            for service in response.list_services_response.service:
                print(service.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
