"""``build_stream_scorer``: a :class:`StreamScorer` wired from settings and URLs (``mloop stream``)."""

from __future__ import annotations

from mloop.batch.api import load_scorer
from mloop.batch.sampling import PredictionSampler
from mloop.config.settings import Settings
from mloop.errors import ConfigError
from mloop.streaming.base import parse_stream_url
from mloop.streaming.consumer import StreamScorer
from mloop.streaming.factory import open_sink, open_source

__all__ = ["build_stream_scorer"]


def build_stream_scorer(
    settings: Settings,
    *,
    source: str | None = None,
    sink: str | None = None,
    dead_letter: str | None = None,
    model: str | None = None,
    batch_size: int | None = None,
) -> StreamScorer:
    """Load the model and open source, result sink and dead-letter sink (``<source stream>.dead``)."""
    cfg = settings.stream
    source_url = source or cfg.source
    sink_url = sink or cfg.sink
    if not source_url or not sink_url:
        raise ConfigError(
            "mloop stream needs a source and a sink: pass --source and --sink (or set stream.source and "
            "stream.sink in mloop.yaml), e.g. --source 'redis://127.0.0.1:6379/0?stream=events&group=scorer' "
            "--sink 'redis://127.0.0.1:6379/0?stream=scores'."
        )
    source_address = parse_stream_url(source_url)
    dead_url = dead_letter or cfg.dead_letter
    dead_address = (
        parse_stream_url(dead_url)
        if dead_url
        else source_address.with_stream(f"{source_address.stream}.dead")
    )
    scorer = load_scorer(settings, model or cfg.model)
    sampler = PredictionSampler(
        settings.prediction_log_url,
        rate=cfg.log_sample,
        model_name=scorer.name,
        model_version=scorer.version,
        arm="stream",
        features=[s.name for s in scorer.specs],
        job=f"stream:{source_address.stream}",
    )
    return StreamScorer(
        scorer,
        open_source(source_address, claim_idle_ms=cfg.claim_idle_ms),
        open_sink(sink_url, dedupe_ttl_s=cfg.dedupe_ttl_s),
        open_sink(dead_address, dedupe_ttl_s=cfg.dedupe_ttl_s),
        batch_size=batch_size or cfg.batch_size,
        block_ms=cfg.block_ms,
        max_in_flight=cfg.max_in_flight,
        sampler=sampler,
    )
