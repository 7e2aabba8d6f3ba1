"""The application factory: settings in, a Litestar app out; long-lived parts in a lifespan.

``create_app(settings)`` opens the Redis client, loads the rule book, the reference data
and the model in its lifespan, keeps them on ``app.state.engine`` and closes them in
``finally``. Background tasks reload changed rule files and reference files and drain the
decision spool; none ever runs on the request path. With ``database_url`` set, the
decision archive (``service.archive``) is opened there too, as ``app.state.archive``
(None without one).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ParamType
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from redis.exceptions import RedisError

from service.api import reviews as review_routes
from service.api.auth import key_identity
from service.api.decisions import (
    get_stored_decision,
    get_stored_decision_of_a_merchant_id_with_slashes,
)
from service.api.errors import EXCEPTION_HANDLERS
from service.api.routes import MAX_BODY_BYTES, ROUTES, SCORE_PATH, score_direct
from service.api.schema_pages import assets_router, openapi_config
from service.archive.archiver import Archiver
from service.archive.state import NOT_CONFIGURED, Archive
from service.archive.upkeep import archive_client, keep_streams
from service.console.routes import console_router, template_config
from service.console.session import ConsoleKeys
from service.contract import (
    VERTICALS,
    ErrorBody,
    FeedbackBatch,
    FeedbackRequest,
    ListChange,
    Review,
    ReviewClaim,
    ReviewClose,
    ReviewPage,
    ScoreRequest,
    ScoreResponse,
)
from service.decision.scoring import Engine
from service.decision.spool import DecisionSpool
from service.errors import (
    ConfigurationError,
    RuleError,
    StoreUnavailable,
)
from service.model.live import LiveModel
from service.normalisation.pseudonymise import Pseudonymiser
from service.reference.tables import ReferenceTables, utc_today
from service.reviews.runtime import Reviews
from service.rules.rulebook import RulebookHolder, RuleLimits
from service.settings import Settings
from service.stores.decisions import register_catalog
from service.stores.lists import ListStore
from service.stores.redis_client import (
    make_client,
    make_hot_connection,
    maxmemory_policy_warning,
    memory_warning,
    persistence_warning,
    probe,
    replica_warning,
)
from service.stores.velocity import RiskStore
from service.telemetry.log_format import configure_logging
from service.telemetry.metrics import SHARED_FLUSH_SECONDS, Metrics

log = logging.getLogger("riskscore")

WARM_CONNECTIONS = 16  # Redis connections opened at startup
STREAM_MAXLEN = 10_000_000  # the streams' cap (MAXLEN ~) without an archive
# With an archive the streams are trimmed only below what is archived (the archiver's
# ``trim``), never by length: the cap is then out of reach.
UNCAPPED_STREAM = 2**62
RULES_SETTLE_SECONDS = 1.0  # a rule file is reloaded once unmodified this long
REFERENCE_RELOAD_TIMEOUT_SECONDS = 10.0  # a reference file read in a thread: how long to wait
_REF = "#/components/schemas/"


def build_engine(
    settings: Settings,
    metrics: Metrics,
    live: LiveModel | None = None,
    reference: ReferenceTables | None = None,
    shadow: LiveModel | None = None,
) -> tuple[Engine, str | None]:
    """The decision core's long-lived parts from ``settings``, and why there is no model.

    The model is what ``live`` (by default a new ``LiveModel`` of the settings' registry)
    loads now; the reason is None when one serves. The shadow model is what ``shadow``
    (by default the registry's ``SHADOW`` pointer) loads now. ``reference``: the reference
    tables already opened (the lifespan reloads them); opened from ``settings`` when not given.
    """
    if reference is None:
        reference = open_reference(settings)
    client = make_client(settings.redis_url, settings.redis_timeout_ms)
    store = RiskStore(
        client,
        prefix=settings.redis_prefix,
        timeout_ms=settings.redis_timeout_ms,
        # with an archive the transaction's key is kept only while gateways retry
        decision_ttl_seconds=(
            min(settings.replay_days, settings.decision_ttl_days)
            if settings.database_url
            else settings.decision_ttl_days
        )
        * 86_400,
        label_ttl_seconds=settings.decision_ttl_days * 86_400,
        hot=make_hot_connection(settings.redis_url, settings.redis_timeout_ms),
        server_clock=settings.clock == "server",
        stream_maxlen=UNCAPPED_STREAM if settings.database_url else STREAM_MAXLEN,
    )
    lists = ListStore(client, prefix=settings.redis_prefix, timeout_ms=settings.redis_timeout_ms)
    live = live if live is not None else LiveModel(settings.model_dir)
    model = live.load()
    metrics.model_loaded.set(1 if model else 0)
    metrics.serving("live", model.version if model else None)
    shadow = shadow if shadow is not None else LiveModel(settings.model_dir, role="shadow")
    shadow_model = shadow.load()
    metrics.serving("shadow", shadow_model.version if shadow_model else None)
    engine = Engine(
        settings=settings,
        fx=reference.fx.current,
        pseudonymiser=Pseudonymiser(settings.secret),
        store=store,
        lists=lists,
        rulebook=RulebookHolder(
            settings.rules_dir, settle_seconds=RULES_SETTLE_SECONDS, limits=RuleLimits.of(settings)
        ),
        spool=DecisionSpool(settings.spool_path),
        metrics=metrics,
        model=model,
        shadow=shadow_model,
    )
    return engine, live.problem


def open_reference(settings: Settings) -> ReferenceTables:
    """The FX table and the operator's disposable-mailbox list, checked; raises when wrong."""
    return ReferenceTables(
        settings.fx_rates_path,
        settings.disposable_domains_path,
        settle_seconds=RULES_SETTLE_SECONDS,
    )


async def _every(seconds: float, action: Any) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await action()
        except Exception:  # a background chore must never die silently or loudly
            log.exception("background task failed")


class ScoringApp(Litestar):
    """Litestar, with ``POST /v1/score`` taken straight to its handler (``score_direct``).

    Every other path, and the score path under a ``root_path``, go through Litestar as
    usual. The shortcut skips middleware and ``before_send`` hooks, so it is taken only
    while the app has none (``direct_score``, set by ``create_app``).
    """

    direct_score = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Send ``POST /v1/score`` to ``score_direct`` when allowed, all else to Litestar."""
        if (
            self.direct_score
            and scope["type"] == "http"
            and scope["path"] == SCORE_PATH
            and not scope.get("root_path")
        ):
            scope["app"] = scope["litestar_app"] = self
            await score_direct(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> Litestar:
    """The app for ``settings``: routes, the error table, a lifespan owning the engine."""
    if not settings.secret:
        raise ConfigurationError("RISKSCORE_SECRET", "required: it keys the pseudonymisation")
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        reference = open_reference(settings)
        live = LiveModel(settings.model_dir)
        shadow = LiveModel(settings.model_dir, role="shadow")
        engine, model_problem = build_engine(settings, metrics, live, reference, shadow)
        app.state.engine = engine
        if model_problem:
            log.warning("scoring without a model: %s", model_problem)
        if shadow.problem:
            log.warning("no shadow model: %s", shadow.problem)

        async def follow_model() -> None:
            before = live.problem
            model = await asyncio.to_thread(live.reload_if_changed)
            if model is not None:
                engine.model = model  # one assignment: a score call sees one model or the other
                metrics.model_loaded.set(1)
                metrics.model_reloads.labels("ok").inc()
                metrics.serving("live", model.version)
                log.info("model now serving: %s", model.version)
            elif live.problem is not None and live.problem != before:
                metrics.model_reloads.labels("refused").inc()
                log.warning("model not swapped: %s", live.problem)
            before = shadow.problem
            if await asyncio.to_thread(shadow.refresh):
                engine.shadow = shadow.current  # one assignment, as for the live model
                version = shadow.current.version if shadow.current else None
                metrics.shadow_model_reloads.labels("ok" if version else "off").inc()
                metrics.serving("shadow", version)
                log.info("shadow model now: %s", version or "none")
            elif shadow.problem is not None and shadow.problem != before:
                metrics.shadow_model_reloads.labels("refused").inc()
                log.warning("shadow model not swapped: %s", shadow.problem)

        async def reload_rules() -> None:
            # In a thread, so reading and compiling never block the event loop; the compile
            # stops itself at its time limit, and this wait gives up a little later whatever
            # happens (the thread is then left to finish; the next tick skips while it runs).
            try:
                async with asyncio.timeout(settings.rules_reload_timeout_seconds + 1.0):
                    changed = await asyncio.to_thread(engine.rulebook.reload_if_changed)
            except TimeoutError:
                engine.rulebook.last_error = RuleError(
                    str(settings.rules_dir), "reload did not finish in time; files refused"
                )
                metrics.rules_reloads.labels("refused").inc()
                return
            if changed is not None:
                metrics.rules_reloads.labels("ok").inc()
                log.info("rules reloaded: %s", changed.version)
            elif engine.rulebook.last_error is not None:
                metrics.rules_reloads.labels("refused").inc()

        async def reload_reference() -> None:
            # In a thread, as for rule files; the files are capped in size, and this wait
            # gives up after a while whatever happens (the next tick skips while it reads).
            try:
                async with asyncio.timeout(REFERENCE_RELOAD_TIMEOUT_SECONDS):
                    results = await asyncio.to_thread(reference.reload_if_changed)
            except TimeoutError:
                log.warning(
                    "reference files still being read after %ss", REFERENCE_RELOAD_TIMEOUT_SECONDS
                )
                return
            for table, result in results.items():
                metrics.reference_reloads.labels(table, result).inc()
                if result == "ok":
                    log.info("reference table reloaded: %s", table)
                else:
                    log.warning("reference table refused: %s", _last_error(reference, table))
            if results.get("fx_rates") == "ok":
                engine.fx = reference.fx.current

        async def drain_spool() -> None:
            if engine.spool.has_pending():
                rejected = engine.spool.rejected
                outcomes: dict[str, int] = {}

                async def send(records: list[bytes]) -> None:
                    outcomes.update(await engine.store.append_records(records))

                try:
                    sent = await engine.spool.drain(send)
                except StoreUnavailable:  # Redis still away: the next round tries again
                    return
                # outcomes: stored (now the transaction's answer), superseded or conflict
                # (another answer was stored first), duplicate (drained before), ...
                if sent:
                    log.info("moved %d spooled decisions to Redis: %s", sent, outcomes)
                if engine.spool.rejected > rejected:
                    log.warning(
                        "set aside %d spooled lines that are not JSON objects in %s",
                        engine.spool.rejected - rejected,
                        engine.spool.rejected_path,
                    )

        archive: Archive | None = None
        archiver: Archiver | None = None
        archive_redis: aioredis.Redis | None = None
        if settings.database_url:
            archive = await Archive.open(
                settings.database_url, retention_days=settings.archive_retention_days
            )
            # a client of its own: long reads and blocking waits, never the hot path's pool
            archive_redis = archive_client(settings.redis_url)
            if settings.archiver == "inline":  # else `riskscore archive` runs it
                archiver = Archiver(archive_redis, engine.store.keys, archive, metrics=metrics)
        app.state.archive = archive
        app.state.archiver = archiver

        async def readiness() -> dict[str, Any]:
            report = await _readiness(
                engine,
                live.problem,
                app.state.redis_warnings,
                reference.report(today=utc_today(), fx_max_age_days=settings.fx_max_age_days),
                shadow.problem,
            )
            # the archive never makes the service unready: scoring goes on without it
            report["archive"] = archive.report() if archive is not None else dict(NOT_CONFIGURED)
            if report["redis"]["ok"] and (warning := await memory_warning(engine.store.client)):
                report["redis"]["warnings"] = [*report["redis"]["warnings"], warning]
            return report

        app.state.readiness = readiness
        # the review queue and the webhook's deliverer, on the archive's database (their
        # routes answer 503 until its schema is applied, or while it is away)
        reviews = await Reviews.start(settings, archive, engine) if archive is not None else None
        app.state.reviews = reviews.queue if reviews is not None else None
        app.state.review_states = app.state.reviews  # the decision lookup's review state
        app.state.redis_warnings = await _redis_warnings(engine)
        await _warm_up(engine)
        settle_heap()
        tasks = [
            asyncio.create_task(_every(settings.rules_reload_seconds, reload_rules)),
            asyncio.create_task(_every(settings.reference_reload_seconds, reload_reference)),
            asyncio.create_task(_every(settings.model_reload_seconds, follow_model)),
            asyncio.create_task(_every(1.0, drain_spool)),
        ]
        if archive is not None and archive_redis is not None:
            # the schema (lookups and reviews need it, whoever archives), the archiver when
            # inline, and the streams' lag for /readyz and /metrics: trimmed here only when
            # the archiver runs here (an external one trims them itself)
            tasks.append(asyncio.create_task(archive.run_upkeep()))
            if archiver is not None:
                tasks.append(asyncio.create_task(archiver.run()))
            keep = keep_streams(
                archive_redis,
                engine.store.keys,
                archive,
                metrics,
                trim_streams=archiver is not None,
            )
            tasks.append(asyncio.create_task(keep))
        if metrics.shared:  # one of several workers: /metrics reads every worker's files

            async def flush_metrics() -> None:
                metrics.flush()

            forgotten = metrics.forget_dead_workers()
            if forgotten:
                log.info("metrics: dropped the gauges of stopped workers %s", forgotten)
            tasks.append(asyncio.create_task(_every(SHARED_FLUSH_SECONDS, flush_metrics)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if reviews is not None:
                await reviews.stop()
            metrics.worker_stopped()
            reference.close()
            if archive is not None and archive_redis is not None:
                await archive.close()
                await archive_redis.aclose()
            await engine.store.client.aclose()
            if engine.store.hot is not engine.store.client:
                await engine.store.hot.aclose()

    app = ScoringApp(
        route_handlers=[
            *ROUTES,
            # reviews live in the database: without one, the service offers no review routes
            *(review_routes.ROUTES if settings.database_url else ()),
            get_stored_decision,
            get_stored_decision_of_a_merchant_id_with_slashes,
            assets_router(),
            console_router(settings.secret, secure_cookies=settings.console_secure_cookies),
        ],
        lifespan=[lifespan],
        state=State(
            {
                "api_keys": settings.api_keys,
                "api_key_merchants": settings.api_key_merchants,
                "api_key_identities": {
                    key: key_identity(settings.secret, key) for key in settings.api_keys
                },
                "api_key_names": settings.api_key_names,
                "max_in_flight": settings.max_in_flight,
                "console_keys": ConsoleKeys(
                    settings.secret,
                    settings.api_keys,
                    settings.api_key_merchants,
                    settings.api_key_names,
                ),
            }
        ),
        request_max_body_size=MAX_BODY_BYTES,
        template_config=template_config(),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(
            title="riskscore",
            version="1",
            description="Fraud and risk scoring for a payment gateway's authorization step.",
        ),
        on_startup=[_document_bodies],
        debug=False,
        logging_config=None,  # Litestar's default would replace the JSON log lines
    )
    app.direct_score = not (app.middleware or app.before_send or app.after_exception)
    return app


# The collector's young-generation threshold once the service is up (CPython's is 700).
YOUNG_COLLECTION_THRESHOLD: Final = 20_000


def settle_heap() -> None:
    """Freeze what startup built and make young collections rare.

    What startup built (app, rules, model, reference data) lives as long as the process:
    frozen, full collections no longer walk it. A score call frees nearly everything it
    makes by reference counting, but 32 calls in flight hold well over 700 containers at
    once, and the young generation's count only falls back to zero at a collection, so at
    CPython's threshold of 700 young collections run every few calls and find next to
    nothing. At ``YOUNG_COLLECTION_THRESHOLD`` they are rare, and the one that does run
    scans at most that many objects (the measurements: ``benchmarks/README.md``).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


async def _warm_up(engine: Engine) -> None:
    """Load the function library and open connections before traffic arrives.

    Otherwise the first payments of a fresh process spend their Redis budget on connecting
    and on ``FUNCTION LOAD``, come back degraded, and concurrent retries of one of them
    each get their own (degraded) evaluation. Redis down at start is not an error here.

    It also registers the catalogue's feature names (``register_catalog``), which name the
    values of the decision records' ``features`` arrays once a later version exports them.
    """
    client = engine.store.client
    try:
        async with asyncio.timeout(2.0):
            await engine.store.library.load(client)
            await asyncio.gather(*(client.ping() for _ in range(WARM_CONNECTIONS)))
            await engine.store.hot.execute_command("PING")
            await register_catalog(client, engine.store.keys.prefix)
            if moved := await engine.lists.migrate_customer_items():
                log.info("rewrote %d customer list items to the escaped layout", moved)
    except (TimeoutError, OSError, RedisError) as exc:
        log.warning("redis warm-up failed: %s: %s", type(exc).__name__, str(exc)[:200])


async def _redis_warnings(engine: Engine) -> list[str]:
    """Configuration that endangers counters or the decision log, said once at startup."""
    try:
        async with asyncio.timeout(1.0):
            found = [
                await replica_warning(engine.store.client),
                await maxmemory_policy_warning(engine.store.client),
                await persistence_warning(engine.store.client),
            ]
    except (TimeoutError, OSError, StoreUnavailable):
        return []
    warnings = [w for w in found if w]
    for warning in warnings:
        log.warning(warning)
    return warnings


async def _readiness(
    engine: Engine,
    model_problem: str | None,
    warnings: list[str],
    reference: dict[str, Any] | None = None,
    shadow_problem: str | None = None,
) -> dict[str, Any]:
    redis_ms, redis_problem = await probe(engine.store.client)
    rulebook = engine.rulebook
    report: dict[str, Any] = {
        "redis": {
            "ok": redis_ms is not None,
            "latency_ms": redis_ms,
            "problem": redis_problem,
            "warnings": warnings,
        },
        "rules": {  # ok: the newest files are the ones served (else last_error says why not)
            "ok": rulebook.last_error is None,
            "version": rulebook.current.version,
            "last_error": str(rulebook.last_error) if rulebook.last_error else None,
        },
        "model": {
            "ok": engine.model is not None,
            "version": engine.model.version if engine.model else None,
            "problem": model_problem,
        },
        "shadow_model": {  # scored beside the live model and recorded; never decides
            "version": engine.shadow.version if engine.shadow else None,
            "problem": shadow_problem,
        },
        **(reference or {}),
        "decision_spool": {"pending": engine.spool.pending()},
    }
    report["ready"] = report["redis"]["ok"]
    return report


def _last_error(reference: ReferenceTables, table: str) -> str | None:
    file = reference.fx if table == "fx_rates" else reference.disposable
    return file.last_error if file is not None else None


_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("/v1/score", "post"): (400, 401, 403, 409, 413, 415, 503),
    ("/v1/feedback", "post"): (400, 401, 403, 404, 413, 415, 503),
    ("/v1/feedback/batch", "post"): (400, 401, 403, 413, 415, 503),
    ("/v1/lists", "get"): (401, 403),
    ("/v1/lists/{name}", "get"): (400, 401, 403),
    ("/v1/lists/{name}/items", "put"): (400, 401, 403, 413, 415),
    ("/v1/lists/{name}/items", "delete"): (400, 401, 403, 413, 415),
    ("/v1/decisions/{merchant_id}/{transaction_id}", "get"): (401, 403, 404),
}


_OBJECTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("/healthz", "get"): (200,),
    ("/readyz", "get"): (200, 503),
    ("/v1/feedback", "post"): (202,),
    ("/v1/feedback/batch", "post"): (200,),
    ("/v1/lists", "get"): (200,),
    ("/v1/lists/{name}", "get"): (200,),
    ("/v1/lists/{name}/items", "put"): (200,),
    ("/v1/lists/{name}/items", "delete"): (200,),
    ("/v1/decisions/{merchant_id}/{transaction_id}", "get"): (200,),
}


def _document_bodies(app: Litestar) -> None:
    """Publish the bodies, responses and errors of every operation in the OpenAPI schema.

    Publish the request bodies the handlers decode themselves (msgspec does the schema),
    the score response, and the error answers each operation gives, all as ``ErrorBody``.
    """
    bodies = {
        ("/v1/score", "post"): ScoreRequest,
        ("/v1/feedback", "post"): FeedbackRequest,
        ("/v1/feedback/batch", "post"): FeedbackBatch,
        ("/v1/lists/{name}/items", "put"): ListChange,
        ("/v1/lists/{name}/items", "delete"): ListChange,
    }
    types = [
        *bodies.values(),
        ScoreResponse,
        ErrorBody,
        ReviewClose,
        ReviewClaim,
        ReviewPage,
        Review,
    ]
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema = app.openapi_schema
    schema.components.schemas.update(components)  # type: ignore[arg-type]
    # The score route is a plain ASGI handler (see ``routes._score_app``), which Litestar
    # leaves out of the schema: its operation is declared here, as Litestar would name it.
    schema.paths = dict(schema.paths or {})
    schema.paths["/v1/score"] = PathItem(
        post=Operation(
            summary="ScorePayment",
            description="Score one payment attempt: approve, challenge, review or decline.",
            operation_id="V1ScoreScorePayment",
            responses={},
            deprecated=False,
        )
    )
    for (path, method), type_ in bodies.items():
        operation = getattr(schema.paths[path], method)  # type: ignore[index]
        operation.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=Reference(ref=f"#/components/schemas/{type_.__name__}")
                )
            },
        )

    def json_response(status: int, name: str) -> OpenAPIResponse:
        content = {"application/json": OpenAPIMediaType(schema=Reference(ref=_REF + name))}
        return OpenAPIResponse(description=HTTPStatus(status).phrase, content=content)

    schema.paths["/v1/score"].post.responses["200"] = json_response(200, "ScoreResponse")  # type: ignore[index,union-attr]
    schema.paths["/metrics"].get.responses["200"] = OpenAPIResponse(  # type: ignore[index,union-attr]
        description="Prometheus text format",
        content={"text/plain": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))},
    )
    for (path, method), statuses in _OBJECTS.items():
        operation = getattr(schema.paths[path], method)  # type: ignore[index]
        for status in statuses:
            operation.responses[str(status)] = OpenAPIResponse(
                description=HTTPStatus(status).phrase,
                content={
                    "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))
                },
            )
    for (path, method), statuses in _ERRORS.items():
        operation = getattr(schema.paths[path], method)  # type: ignore[index]
        for status in statuses:
            operation.responses[str(status)] = json_response(status, "ErrorBody")
    for (path, method), (body, answer, errors) in _REVIEW_OPERATIONS.items():
        if path not in schema.paths:  # no database, no review routes
            continue
        operation = getattr(schema.paths[path], method)
        if body is not None:
            operation.request_body = RequestBody(
                required=body is ReviewClose,
                content={
                    "application/json": OpenAPIMediaType(schema=Reference(ref=_REF + body.__name__))
                },
            )
        operation.responses = {"200": json_response(200, answer)}
        if path == "/v1/reviews":
            operation.parameters = _review_query()
        for status in errors:
            operation.responses[str(status)] = json_response(status, "ErrorBody")


def _review_query() -> list[Parameter | Reference]:
    """The query parameters of ``GET /v1/reviews`` (its handler reads them itself)."""

    def query(name: str, schema: Schema, description: str) -> Parameter:
        return Parameter(
            name=name,
            param_in=ParamType.QUERY,
            required=False,
            schema=schema,
            description=description,
        )

    text = OpenAPIType.STRING
    return [
        query("status", Schema(type=text, enum=["open", "closed"]), "open (default) or closed"),
        query("merchant_id", Schema(type=text, min_length=1, max_length=64), "one merchant's"),
        query("vertical", Schema(type=text, enum=list(VERTICALS)), "one vertical's"),
        query(
            "limit",
            Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=500),
            "reviews per page, 50 by default",
        ),
        query("cursor", Schema(type=text), "the previous page's next_cursor"),
    ]


_ONE_REVIEW = "/v1/reviews/{merchant_id}/{transaction_id}"
# the review routes (present with a database): request body, 200 answer, error statuses
_REVIEW_OPERATIONS: dict[tuple[str, str], tuple[type | None, str, tuple[int, ...]]] = {
    ("/v1/reviews", "get"): (None, "ReviewPage", (400, 401, 403, 503)),
    (_ONE_REVIEW, "get"): (None, "Review", (400, 401, 403, 404, 503)),
    (_ONE_REVIEW, "post"): (ReviewClose, "Review", (400, 401, 403, 404, 409, 413, 415, 503)),
    (_ONE_REVIEW + "/claim", "post"): (
        ReviewClaim,
        "Review",
        (400, 401, 403, 404, 409, 413, 415, 503),
    ),
    (_ONE_REVIEW + "/claim", "delete"): (
        ReviewClaim,
        "Review",
        (400, 401, 403, 404, 413, 415, 503),
    ),
}


def app_from_env() -> Litestar:
    """The factory ``riskscore serve`` hands to the ASGI server."""
    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_level)
    return create_app(settings)
