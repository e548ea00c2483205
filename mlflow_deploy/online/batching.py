"""Adaptive batching in an endpoint's gateway: concurrent ``POST /score`` requests of one
deployment joined into one call to one instance, and its answer split back by rows.

A deployment's instances are synchronous workers, one request each at a time, and a vectorised
model scores 32 rows in little more time than one: joining small concurrent requests turns
waiting for a worker into rows of one predict. This is MLServer's adaptive batching
(``max_batch_size``, ``max_batch_time``) for Azure's envelope, in front of the server, and safe
by construction rather than by hope:

* Only requests that would be scored alike are joined: Azure's ``input_data`` in the same form
  (split columns, a tensor, named tensors), the same columns or tensor names, the same JSON kind
  of value in each column (so pandas and numpy infer the same dtypes joined as alone), the same
  params, the same content type, and no header but those that never change scoring. Anything
  else (another envelope, a body over ``JOIN_BODY_LIMIT``, an index of its own, a number JSON
  cannot carry back) goes alone, exactly as without batching.
* A batch is sent once it holds ``max_batch_size`` rows (rows, not requests: they are what one
  predict costs; a request that has that many goes alone), or once its first request has waited
  ``max_batch_time_ms``, whichever comes first.
* A request that finds its deployment idle (no more requests in the gateway for it than its
  ready instances have workers, itself included) goes alone at once: a worker is free for it,
  and waiting the batch time for company would be all its latency at a light load (one client:
  113 requests/s with a 5 ms batch time against 559 without batching, bench/RESULTS.md). Once
  the deployment's last batch found company, requests go alone at once only up to one per ready
  instance, which leaves the batches a worker (``Batcher._idle``).
* Each request gets exactly what it would have got alone, or is sent alone: a joined call that
  is not a 200 (one bad request fails the whole call) has every request re-sent on its own, so
  each gets its own status and message; so does one whose answer reports coercions (they may
  differ per request) or whose answer cannot be split by rows (not a list, or a dict of lists,
  one entry per row). The last two are remembered for that kind of request until the next
  reload, so a model that is not row-wise costs one extra predict, not one per batch.
* A request's ``request_timeout_ms`` counts from its arrival, its wait in a batch included.

Each answer keeps its own request ids, as the server would have answered them; its other
headers (content type, ``x-ms-run-fn-exec-ms``: the joined call's) come from the joined call,
which the server logs under a request id of its own.
"""

import asyncio
import json
import logging
import math
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from mlflow_deploy.online.backends import Backend, Instance
from mlflow_deploy.online.routes import DEPLOYMENT_HEADER
from mlflow_deploy.scoring import forms
from mlflow_deploy.scoring.errors import COERCIONS_HEADER, REQUEST_ID, new_request_id

try:  # the gateway's JSON: orjson where installed (the scoring server's own, so an answer split
    # here is byte for byte what the server writes), else the standard library's
    import orjson
except ImportError:  # pragma: no cover - the control plane's `fast` extra brings it
    orjson = None

__all__ = ["Batcher", "SCORE", "JOIN_BODY_LIMIT", "BATCH_BYTES"]

log = logging.getLogger("mlflow_deploy.gateway")

Answer = Tuple[Optional[int], Any, bytes]
#: the gateway's own forwarding of one request: (backend, method, path, headers, body,
#: timeout_ms) -> its Answer; a joined call and a request sent alone both go through it
Forward = Callable[[Backend, str, str, Dict[str, str], bytes, Optional[float]], Awaitable[Answer]]
SCORE = "/score"
# a body past this is sent alone, unread: batching pays for small requests, and parsing a large
# one would hold the gateway's one event loop for what little a join saves
JOIN_BODY_LIMIT = 64 * 1024
# the bodies joined into one call, at most: far below any deployment's request limit
BATCH_BYTES = 1024 * 1024
# kinds of request remembered as not to be joined, per deployment, at most (then forgotten)
REMEMBERED = 256
CLIENT_REQUEST_ID = "x-ms-client-request-id"
# headers a joinable request may carry: none of them changes how it is scored (the gateway's
# routing header, the ids, content negotiation the server ignores, tracing)
JOINABLE_HEADERS = frozenset({
    "content-type", "accept", "accept-encoding", "accept-language", "user-agent", "expect",
    REQUEST_ID, "x-ms-request-id", CLIENT_REQUEST_ID, DEPLOYMENT_HEADER,
    "traceparent", "tracestate",
})
_SPLIT_KEYS = frozenset({"columns", "index", "data"})
_ENVELOPE_KEYS = frozenset({"input_data", "params"})


class _Unjoinable(ValueError):
    """A value the join could not carry as it is (a number JSON has no text for)."""


class _Item:
    """One request waiting in a batch."""

    __slots__ = ("data", "params", "rows", "size", "content_type", "request_id", "client_id",
                 "arrived", "deadline", "future")

    def __init__(self, data: Any, params: Optional[Dict[str, Any]], rows: int, size: int,
                 content_type: str, request_id: str, client_id: str, arrived: float,
                 deadline: float, future: "asyncio.Future[Optional[Answer]]"):
        self.data, self.params, self.rows, self.size = data, params, rows, size
        self.content_type, self.request_id, self.client_id = content_type, request_id, client_id
        self.arrived, self.deadline, self.future = arrived, deadline, future


class _Batch:
    __slots__ = ("form", "items", "rows", "size", "timer")

    def __init__(self, form: str):
        self.form = form
        self.items: List[_Item] = []
        self.rows = self.size = 0
        self.timer: Optional[asyncio.TimerHandle] = None


class Batcher:
    """The gateway's batches, per deployment and kind of request. ``metrics`` (the gateway's
    ``GatewayMetrics``, once it exists) records each call's size and each request's wait."""

    def __init__(self, forward: Forward):
        self._forward = forward
        self.metrics: Any = None
        self.pending: Dict[Tuple[Backend, Any], _Batch] = {}
        self.sending: Set[asyncio.Task] = set()
        # requests inside ``forward`` per deployment: a reload that drops instances waits for
        # those of the deployments they served (a batch has not picked its instance yet)
        self.waiting: Dict[Backend, int] = {}
        # per deployment: (the route it was learnt under, kinds of request sent alone since)
        self.alone: Dict[Backend, Tuple[Any, Set[Any]]] = {}

    def takes(self, backend: Backend, method: str, path: str) -> bool:
        """Whether a routed request goes through ``forward``: a POST to /score of a deployment
        that batches (the gateway asks only for what it does not pass through untouched)."""
        return backend.route.max_batch_size > 1 and method == "POST" and path == SCORE

    def holds(self, instances: Iterable[Instance]) -> bool:
        """Whether a request of a deployment served by any of ``instances`` is still in a
        batch, or back from one on its way alone."""
        dropped = set(instances)
        return any(count and not dropped.isdisjoint(backend.instances)
                   for backend, count in self.waiting.items())

    async def forward(self, backend: Backend, path: str, headers: Dict[str, str],
                      body: bytes) -> Answer:
        """The request's answer as ``Gateway._forward`` gives it: from a joined call when it
        could be joined and the call's answer split, else from its own call."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        deadline = arrived + backend.route.request_timeout_ms / 1000.0
        self.waiting[backend] = self.waiting.get(backend, 0) + 1
        try:
            item = self._item(backend, headers, body, arrived, deadline)
            if item is None:
                self._observe(backend, size=1, waits=(0.0,))
            else:
                answer = await item.future
                if answer is not None:
                    return answer
            remaining_ms = (deadline - loop.time()) * 1000.0
            if remaining_ms <= 0:
                return None, "timeout", b""
            return await self._forward(backend, "POST", path, headers, body,
                                               remaining_ms)
        finally:
            left = self.waiting[backend] - 1
            if left:
                self.waiting[backend] = left
            else:
                del self.waiting[backend]

    # --- joining -----------------------------------------------------------------------------

    def _item(self, backend: Backend, headers: Dict[str, str], body: bytes, arrived: float,
              deadline: float) -> Optional[_Item]:
        """The request put in its batch (sending the batch when full), or None to send it
        alone."""
        route = backend.route
        if len(body) > JOIN_BODY_LIMIT or self._idle(backend):
            return None
        content_type, client_id = "", None
        for name, value in headers.items():
            lowered = name.lower()
            if lowered not in JOINABLE_HEADERS:
                return None
            if lowered == "content-type":
                content_type = value
            elif lowered == CLIENT_REQUEST_ID:
                client_id = value
        if not forms.is_json(content_type):
            return None
        try:
            envelope = _loads(body)
            if not isinstance(envelope, dict) or not envelope.keys() <= _ENVELOPE_KEYS:
                return None
            params = envelope.get("params")
            if params is not None and not isinstance(params, dict):
                return None
            params = params or None  # an empty object is no params, as the server reads it
            _kind(params)  # a number JSON has no text for would not survive the join
            shape = _shape(envelope.get("input_data"))
        except (ValueError, RecursionError):
            return None
        if shape is None or shape[1] >= route.max_batch_size:
            return None
        (form, kinds), rows = shape
        key = (content_type.strip().lower(), form, kinds,
               _dumps(params, sort=True) if params else b"")
        learnt = self.alone.get(backend)
        if learnt is not None and learnt[0] is route and key in learnt[1]:
            return None
        loop = asyncio.get_running_loop()
        item = _Item(envelope["input_data"], params, rows, len(body), content_type,
                     headers[REQUEST_ID], client_id or headers[REQUEST_ID], arrived, deadline,
                     loop.create_future())
        slot = (backend, key)
        batch = self.pending.get(slot)
        if batch is not None and (batch.rows + rows > route.max_batch_size
                                  or batch.size + item.size > BATCH_BYTES):
            self._send(slot, batch)
            batch = None
        if batch is None:
            batch = self.pending[slot] = _Batch(form)
            batch.timer = loop.call_at(arrived + route.max_batch_time_ms / 1000.0, self._send,
                                       slot, batch)
        batch.items.append(item)
        batch.rows += rows
        batch.size += item.size
        if batch.rows >= route.max_batch_size:
            self._send(slot, batch)
        return item

    @staticmethod
    def _idle(backend: Backend) -> bool:
        """Whether a request has nothing to wait for: no more requests in flight (itself
        included) than ready instances, or than their workers unless the deployment's last
        batch found company. Where batches fill, the next burst comes as their answers do, and
        one lone request per worker would take every worker at its start, the batch behind them
        waiting for one (at 32 clients, 8-26 % fewer requests/s with 2 workers: bench/RESULTS.md);
        one per instance leaves the batch a worker. Where the last batch waited alone, company
        is not coming."""
        ready = backend.ready_instances
        if backend.in_flight <= ready:
            return True
        return backend.in_flight <= ready * backend.route.workers and \
            not backend.last_batch_joined

    def _send(self, slot: Tuple[Backend, Any], batch: _Batch) -> None:
        """Send the batch: one request back to its own call, more in a joined one."""
        if self.pending.get(slot) is batch:
            del self.pending[slot]
        if batch.timer is not None:
            batch.timer.cancel()
        now = asyncio.get_running_loop().time()
        items = [item for item in batch.items if not item.future.done()]  # not left yet
        if not items:
            return
        backend = slot[0]
        self._observe(backend, size=len(items), waits=[now - item.arrived for item in items])
        backend.last_batch_joined = len(items) > 1
        if len(items) == 1:
            items[0].future.set_result(None)
            return
        task = asyncio.ensure_future(self._joined(backend, slot[1], batch.form, items))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _joined(self, backend: Backend, key: Any, form: str, items: List[_Item]) -> None:
        answers: Optional[List[Answer]] = None
        try:
            answers = await self._call(backend, key, form, items)
        except Exception:  # noqa: BLE001 - a bug here must cost a request its batch, not its answer
            log.exception("%s: a joined call failed in the gateway; its requests go alone",
                          backend.name)
        for index, item in enumerate(items):
            if not item.future.done():
                item.future.set_result(answers[index] if answers else None)

    async def _call(self, backend: Backend, key: Any, form: str,
                    items: List[_Item]) -> Optional[List[Answer]]:
        """Each request's answer from one joined call, or None when they must go alone."""
        loop = asyncio.get_running_loop()
        timeout_ms = (min(item.deadline for item in items) - loop.time()) * 1000.0
        if timeout_ms <= 0:
            return None
        headers = {"Content-Type": items[0].content_type, REQUEST_ID: new_request_id()}
        status, answer_headers, answer = await self._forward(
            backend, "POST", SCORE, headers, _joined_body(form, items), timeout_ms)
        if status != 200:
            return None  # alone, each gets its own status and message (a timeout: its 408)
        if any(name.lower() == COERCIONS_HEADER for name, _ in answer_headers):
            self._learn(backend, key)  # a request's own coercions are known only alone
            return None
        parts = _split(answer, [item.rows for item in items])
        if parts is None:
            log.warning("%s: an answer to joined requests has no entry per row; requests of "
                        "this kind go alone until the next reload", backend.name)
            self._learn(backend, key)
            return None
        return [(200, _with_ids(answer_headers, item), part) for item, part in zip(items, parts)]

    def _learn(self, backend: Backend, key: Any) -> None:
        learnt = self.alone.get(backend)
        if learnt is None or learnt[0] is not backend.route or len(learnt[1]) >= REMEMBERED:
            learnt = self.alone[backend] = (backend.route, set())
        learnt[1].add(key)

    def _observe(self, backend: Backend, size: int, waits: Sequence[float]) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch(backend.name, size, waits)


def _with_ids(headers: Sequence[Tuple[str, str]], item: _Item) -> List[Tuple[str, str]]:
    """The joined call's headers with the request's own ids, as the server answers them
    (scoring/app.py): the request id is the one the gateway forwarded, the client request id
    the client's own, else the request id."""
    ids = {REQUEST_ID: item.request_id, "x-ms-request-id": item.request_id,
           CLIENT_REQUEST_ID: item.client_id}
    return [(name, value) for name, value in headers if name.lower() not in ids] + \
        list(ids.items())


# --- the envelope --------------------------------------------------------------------------

def _kind(value: Any) -> Any:
    """What pandas and numpy infer a value's dtype and shape from: its JSON type, and for an
    array its length and its elements' kinds. Raises _Unjoinable for a non-finite number (no
    JSON text writes it back)."""
    if isinstance(value, list):
        return ("[", len(value), frozenset(_kind(v) for v in value))
    if isinstance(value, dict):
        return ("{", frozenset((k, _kind(v)) for k, v in value.items()))
    if isinstance(value, float) and not math.isfinite(value):
        raise _Unjoinable("a non-finite number")
    return type(value)


def _shape(data: Any) -> Optional[Tuple[Tuple[str, Any], int]]:
    """((form, what must match to join), rows) of Azure's ``input_data``, its form as the
    server tells it (``forms.form_of``), or None for what goes alone."""
    form = forms.form_of(data)
    if form == "records" or not data or not isinstance(data, (list, dict)):
        return None  # records: Azure's /score takes none; a scalar or nothing: the server's 400
    if form == "tensor":
        if any(isinstance(row, dict) for row in data):
            return None  # records mixed with rows: whatever the server says of it, alone
        return (form, frozenset(_kind(row) for row in data)), len(data)
    if form == "split":
        columns, rows = data.get("columns"), data.get("data")
        if not (data.keys() <= _SPLIT_KEYS and isinstance(columns, list) and columns
                and all(isinstance(c, str) for c in columns) and isinstance(rows, list) and rows
                and all(isinstance(r, list) and len(r) == len(columns) for r in rows)):
            return None
        if "index" in data and data["index"] != list(range(len(rows))):
            return None  # an index of its own: joined, the model would see others' rows' index
        kinds = tuple(frozenset(_kind(row[j]) for row in rows) for j in range(len(columns)))
        return (form, (tuple(columns), "index" in data, kinds)), len(rows)
    tensors = list(data.values())
    if not all(isinstance(t, list) for t in tensors):
        return None
    rows = len(tensors[0])
    if rows == 0 or any(len(t) != rows for t in tensors):
        return None  # a tensor of another length: the first axis is not rows
    return (form, tuple((name, frozenset(_kind(v) for v in values))
                        for name, values in data.items())), rows


def _joined_body(form: str, items: List[_Item]) -> bytes:
    """One envelope of the items' rows, in order, along the first axis."""
    first = items[0].data
    if form == "tensor":
        data: Any = [row for item in items for row in item.data]
    elif form == "split":
        rows = [row for item in items for row in item.data["data"]]
        data = {"columns": first["columns"], "data": rows}
        if "index" in first:
            data["index"] = list(range(len(rows)))
    else:
        data = {name: [value for item in items for value in item.data[name]] for name in first}
    envelope: Dict[str, Any] = {"input_data": data}
    if items[0].params:
        envelope["params"] = items[0].params
    return _dumps(envelope)


def _split(answer: bytes, counts: List[int]) -> Optional[List[bytes]]:
    """Azure's rendering of the predictions (a list, one entry per row, or a dict of such
    lists: a DataFrame's records, a Series, an array, a dict of arrays) cut by ``counts``; None
    for any other answer."""
    try:
        value = _loads(answer)
    except (ValueError, RecursionError):
        return None
    total = sum(counts)
    cuts, start = [], 0
    for count in counts:
        cuts.append((start, start + count))
        start += count
    if isinstance(value, list) and len(value) == total:
        return [_dumps(value[a:b]) for a, b in cuts]
    if isinstance(value, dict) and value and all(
            isinstance(v, list) and len(v) == total for v in value.values()):
        return [_dumps({k: v[a:b] for k, v in value.items()}) for a, b in cuts]
    return None


def _refuse_constant(name: str) -> Any:
    raise _Unjoinable("a non-finite number")


if orjson is not None:
    def _loads(raw: bytes) -> Any:
        return orjson.loads(raw)  # refuses NaN and Infinity, which no JSON text writes back

    def _dumps(value: Any, sort: bool = False) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort else 0)
else:  # pragma: no cover - the control plane's `fast` extra brings orjson
    def _loads(raw: bytes) -> Any:
        return json.loads(raw, parse_constant=_refuse_constant)

    def _dumps(value: Any, sort: bool = False) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          sort_keys=sort).encode("utf-8")
