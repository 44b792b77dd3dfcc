"""Generated protobuf messages for the kubelet PodResources API (see ``api.proto`` beside this).

Import ``api_pb2`` only where it is needed: it loads the protobuf runtime.
"""
