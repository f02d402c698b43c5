from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PauseRequest(_message.Message):
    __slots__ = ("wait_outstanding", "max_pause_wait_time")
    WAIT_OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    MAX_PAUSE_WAIT_TIME_FIELD_NUMBER: _ClassVar[int]
    wait_outstanding: bool
    max_pause_wait_time: int
    def __init__(self, wait_outstanding: _Optional[bool] = ..., max_pause_wait_time: _Optional[int] = ...) -> None: ...

class CheckPausedResponse(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    def __init__(self, paused: _Optional[bool] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: str
    def __init__(self, stats: _Optional[str] = ...) -> None: ...
