"""The Functions host's protobuf messages (a subset of ``FunctionRpc.proto``), built at run time.

``FunctionRpc.proto`` is the wire contract between the Functions host and a language worker. On
Python 3.13 the worker's transport (the proxy worker, part of the host image) hands its compiled
module of these messages to ``azure-functions-runtime`` as ``properties["protos"]``, and the
runtime library builds and reads real protobuf messages through it (``WhichOneof``, map fields,
enums as class attributes). This module declares the messages that exchange needs, with the
contract's package, message, field names and field numbers, and builds them with the protobuf
runtime: no ``protoc``, nothing generated into the repository.

Left out, because neither the runtime library nor the host stand-in touches them: the streaming
service itself, logs (``RpcLog``), status and terminate messages, shared-memory requests,
claims identities and the ``nullable_*`` HTTP maps.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace
from typing import NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2

PACKAGE = "AzureFunctionsRpcMessages"

_FD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _FD.TYPE_STRING,
    "bytes": _FD.TYPE_BYTES,
    "bool": _FD.TYPE_BOOL,
    "int32": _FD.TYPE_INT32,
    "int64": _FD.TYPE_INT64,
    "sint64": _FD.TYPE_SINT64,
    "double": _FD.TYPE_DOUBLE,
}
_WELL_KNOWN = {"google.protobuf.Duration", "google.protobuf.Timestamp"}


class F(NamedTuple):
    """One field: name, number, type (scalar, enum, message or ``map<string,T>``), label, oneof."""

    name: str
    number: int
    type: str
    repeated: bool = False
    oneof: str | None = None


ENUMS: dict[str, list[str]] = {  # values in order from 0, except where the contract skips numbers
    "StatusResult.Status": ["Failure", "Success", "Cancelled"],
    "BindingInfo.Direction": ["in", "out", "inout"],
    "BindingInfo.DataType": ["undefined", "string", "binary", "stream"],
    "RpcHttpCookie.SameSite": ["None", "Lax", "Strict", "ExplicitNone"],
    "RpcRetryOptions.RetryStrategy": ["exponential_backoff", "fixed_delay"],
    "RpcDataType": [
        "unknown",
        "string",
        "json",
        "bytes",
        "stream",
        "http",
        "int",
        "double",
        "collection_bytes",
        "collection_string",
        "collection_double",
        "collection_sint64",
    ],
}

_TYPED = "TypedData"
MESSAGES: dict[str, list[F]] = {
    "StreamingMessage": [
        F("request_id", 1, "string"),
        *(
            F(name, number, kind, oneof="content")
            for name, number, kind in [
                ("invocation_request", 4, "InvocationRequest"),
                ("invocation_response", 5, "InvocationResponse"),
                ("function_load_request", 8, "FunctionLoadRequest"),
                ("function_load_response", 9, "FunctionLoadResponse"),
                ("worker_init_response", 16, "WorkerInitResponse"),
                ("worker_init_request", 17, "WorkerInitRequest"),
                ("function_environment_reload_request", 25, "FunctionEnvironmentReloadRequest"),
                ("function_environment_reload_response", 26, "FunctionEnvironmentReloadResponse"),
                ("functions_metadata_request", 29, "FunctionsMetadataRequest"),
                ("function_metadata_response", 30, "FunctionMetadataResponse"),
            ]
        ),
    ],
    "WorkerInitRequest": [
        F("host_version", 1, "string"),
        F("capabilities", 2, "map<string,string>"),
        F("worker_directory", 4, "string"),
        F("function_app_directory", 5, "string"),
    ],
    "WorkerInitResponse": [
        F("worker_version", 1, "string"),
        F("capabilities", 2, "map<string,string>"),
        F("result", 3, "StatusResult"),
        F("worker_metadata", 4, "WorkerMetadata"),
    ],
    "WorkerMetadata": [
        F("runtime_name", 1, "string"),
        F("runtime_version", 2, "string"),
        F("worker_version", 3, "string"),
        F("worker_bitness", 4, "string"),
        F("custom_properties", 5, "map<string,string>"),
    ],
    "StatusResult": [
        F("status", 4, "StatusResult.Status"),
        F("result", 1, "string"),
        F("exception", 2, "RpcException"),
    ],
    "RpcException": [
        F("source", 3, "string"),
        F("stack_trace", 1, "string"),
        F("message", 2, "string"),
        F("is_user_exception", 4, "bool"),
        F("type", 5, "string"),
    ],
    "FunctionEnvironmentReloadRequest": [
        F("environment_variables", 1, "map<string,string>"),
        F("function_app_directory", 2, "string"),
    ],
    "FunctionEnvironmentReloadResponse": [
        F("worker_metadata", 1, "WorkerMetadata"),
        F("capabilities", 2, "map<string,string>"),
        F("result", 3, "StatusResult"),
    ],
    "FunctionLoadRequest": [
        F("function_id", 1, "string"),
        F("metadata", 2, "RpcFunctionMetadata"),
        F("managed_dependency_enabled", 3, "bool"),
    ],
    "FunctionLoadResponse": [
        F("function_id", 1, "string"),
        F("result", 2, "StatusResult"),
        F("is_dependency_downloaded", 3, "bool"),
    ],
    "RpcFunctionMetadata": [
        F("name", 4, "string"),
        F("directory", 1, "string"),
        F("script_file", 2, "string"),
        F("entry_point", 3, "string"),
        F("bindings", 6, "map<string,BindingInfo>"),
        F("is_proxy", 7, "bool"),
        F("status", 8, "StatusResult"),
        F("language", 9, "string"),
        F("raw_bindings", 10, "string", repeated=True),
        F("function_id", 13, "string"),
        F("managed_dependency_enabled", 14, "bool"),
        F("retry_options", 15, "RpcRetryOptions"),
        F("properties", 16, "map<string,string>"),
    ],
    "FunctionsMetadataRequest": [F("function_app_directory", 1, "string")],
    "FunctionMetadataResponse": [
        F("function_metadata_results", 1, "RpcFunctionMetadata", repeated=True),
        F("result", 2, "StatusResult"),
        F("use_default_metadata_indexing", 3, "bool"),
    ],
    "InvocationRequest": [
        F("invocation_id", 1, "string"),
        F("function_id", 2, "string"),
        F("input_data", 3, "ParameterBinding", repeated=True),
        F("trigger_metadata", 4, f"map<string,{_TYPED}>"),
        F("trace_context", 5, "RpcTraceContext"),
        F("retry_context", 6, "RetryContext"),
    ],
    "RpcTraceContext": [
        F("trace_parent", 1, "string"),
        F("trace_state", 2, "string"),
        F("attributes", 3, "map<string,string>"),
    ],
    "RetryContext": [F("retry_count", 1, "int32"), F("max_retry_count", 2, "int32"), F("exception", 3, "RpcException")],
    "InvocationResponse": [
        F("invocation_id", 1, "string"),
        F("output_data", 2, "ParameterBinding", repeated=True),
        F("return_value", 4, _TYPED),
        F("result", 3, "StatusResult"),
    ],
    _TYPED: [
        F(name, number, kind, oneof="data")
        for name, number, kind in [
            ("string", 1, "string"),
            ("json", 2, "string"),
            ("bytes", 3, "bytes"),
            ("stream", 4, "bytes"),
            ("http", 5, "RpcHttp"),
            ("int", 6, "sint64"),
            ("double", 7, "double"),
            ("collection_bytes", 8, "CollectionBytes"),
            ("collection_string", 9, "CollectionString"),
            ("collection_double", 10, "CollectionDouble"),
            ("collection_sint64", 11, "CollectionSInt64"),
            ("model_binding_data", 12, "ModelBindingData"),
            ("collection_model_binding_data", 13, "CollectionModelBindingData"),
        ]
    ],
    "RpcSharedMemory": [
        F("name", 1, "string"),
        F("offset", 2, "int64"),
        F("count", 3, "int64"),
        F("type", 4, "RpcDataType"),
    ],
    "CollectionString": [F("string", 1, "string", repeated=True)],
    "CollectionBytes": [F("bytes", 1, "bytes", repeated=True)],
    "CollectionDouble": [F("double", 1, "double", repeated=True)],
    "CollectionSInt64": [F("sint64", 1, "sint64", repeated=True)],
    "ParameterBinding": [
        F("name", 1, "string"),
        F("data", 2, _TYPED, oneof="rpc_data"),
        F("rpc_shared_memory", 3, "RpcSharedMemory", oneof="rpc_data"),
    ],
    "BindingInfo": [
        F("type", 2, "string"),
        F("direction", 3, "BindingInfo.Direction"),
        F("data_type", 4, "BindingInfo.DataType"),
        F("properties", 5, "map<string,string>"),
    ],
    "RpcHttpCookie": [
        F("name", 1, "string"),
        F("value", 2, "string"),
        F("domain", 3, "NullableString"),
        F("path", 4, "NullableString"),
        F("expires", 5, "NullableTimestamp"),
        F("secure", 6, "NullableBool"),
        F("http_only", 7, "NullableBool"),
        F("same_site", 8, "RpcHttpCookie.SameSite"),
        F("max_age", 9, "NullableDouble"),
    ],
    "RpcHttp": [
        F("method", 1, "string"),
        F("url", 2, "string"),
        F("headers", 3, "map<string,string>"),
        F("body", 4, _TYPED),
        F("params", 10, "map<string,string>"),
        F("status_code", 12, "string"),
        F("query", 15, "map<string,string>"),
        F("enable_content_negotiation", 16, "bool"),
        F("rawBody", 17, _TYPED),
        F("cookies", 19, "RpcHttpCookie", repeated=True),
    ],
    "ModelBindingData": [
        F("version", 1, "string"),
        F("source", 2, "string"),
        F("content_type", 3, "string"),
        F("content", 4, "bytes"),
    ],
    "CollectionModelBindingData": [F("model_binding_data", 1, "ModelBindingData", repeated=True)],
    "RpcRetryOptions": [
        F("max_retry_count", 2, "int32"),
        F("delay_interval", 3, "google.protobuf.Duration"),
        F("minimum_interval", 4, "google.protobuf.Duration"),
        F("maximum_interval", 5, "google.protobuf.Duration"),
        F("retry_strategy", 6, "RpcRetryOptions.RetryStrategy"),
    ],
    # shared/NullableTypes.proto: each wraps its value in a oneof, so "unset" and "empty" differ.
    "NullableString": [F("value", 1, "string", oneof="string")],
    "NullableDouble": [F("value", 1, "double", oneof="double")],
    "NullableBool": [F("value", 1, "bool", oneof="bool")],
    "NullableTimestamp": [F("value", 1, "google.protobuf.Timestamp", oneof="timestamp")],
}


def _set_type(field: descriptor_pb2.FieldDescriptorProto, kind: str) -> None:
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    elif kind in ENUMS:
        field.type, field.type_name = _FD.TYPE_ENUM, f".{PACKAGE}.{kind}"
    elif kind in _WELL_KNOWN:
        field.type, field.type_name = _FD.TYPE_MESSAGE, f".{kind}"
    elif kind in MESSAGES:
        field.type, field.type_name = _FD.TYPE_MESSAGE, f".{PACKAGE}.{kind}"
    else:
        raise KeyError(f"unknown field type {kind!r}")


def _add_message(file: descriptor_pb2.FileDescriptorProto, name: str, fields: list[F]) -> None:
    message = file.message_type.add(name=name)
    for enum_name, values in ENUMS.items():
        if enum_name.startswith(name + "."):
            enum = message.enum_type.add(name=enum_name.split(".", 1)[1])
            for number, value in enumerate(values):
                enum.value.add(name=value, number=number)
    oneofs: list[str] = []
    for spec in fields:
        field = message.field.add(name=spec.name, number=spec.number)
        field.label = _FD.LABEL_REPEATED if spec.repeated else _FD.LABEL_OPTIONAL
        if spec.type.startswith("map<"):
            key, value = spec.type[4:-1].split(",")
            entry = message.nested_type.add(name="".join(p.title() for p in spec.name.split("_")) + "Entry")
            entry.options.map_entry = True
            for entry_name, number, kind in (("key", 1, key), ("value", 2, value)):
                entry_field = entry.field.add(name=entry_name, number=number, label=_FD.LABEL_OPTIONAL)
                _set_type(entry_field, kind)
            field.label, field.type = _FD.LABEL_REPEATED, _FD.TYPE_MESSAGE
            field.type_name = f".{PACKAGE}.{name}.{entry.name}"
        else:
            _set_type(field, spec.type)
        if spec.oneof is not None:
            if spec.oneof not in oneofs:
                oneofs.append(spec.oneof)
                message.oneof_decl.add(name=spec.oneof)
            field.oneof_index = oneofs.index(spec.oneof)


@cache
def rpc_messages() -> SimpleNamespace:
    """The message classes, as attributes named like the contract's (``rpc.TypedData`` ...)."""
    file = descriptor_pb2.FileDescriptorProto(name="function_rpc_subset.proto", package=PACKAGE, syntax="proto3")
    file.dependency.extend([duration_pb2.DESCRIPTOR.name, timestamp_pb2.DESCRIPTOR.name])
    for enum_name, values in ENUMS.items():
        if "." not in enum_name:
            enum = file.enum_type.add(name=enum_name)
            for number, value in enumerate(values):
                enum.value.add(name=value, number=number)
    for name, fields in MESSAGES.items():
        _add_message(file, name, fields)
    pool = descriptor_pool.DescriptorPool()
    for well_known in (duration_pb2, timestamp_pb2):
        pool.AddSerializedFile(well_known.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return SimpleNamespace(
        **{name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in MESSAGES}
    )
