"""The one settings object: environment variables, then an optional TOML file, then defaults.

Environment variables use the ``HANDOFF_`` prefix (``HANDOFF_PORT=8600``); ``DATABASE_URL`` and
``OPENAI_API_KEY`` are also read under their usual names. The TOML file is ``handoff.toml`` in the
working directory, or the path in ``HANDOFF_CONFIG``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from feedback.pricing import PriceTable
from feedback.repetition import LoopRule
from playground.hardware import accelerator, choose_engine, cpu_flags, llama_cpp_installed, llama_server_binary

MIN_PASSWORD_CHARS = 10  # organizer passwords, the bootstrap admin's included

BUNDLED_MODEL = "bundled:smollm2"
BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"  # how answers name it, whichever engine runs it
LocalEngineKind = Literal["transformers", "llamacpp", "openai"]
OPENAI_BASE_URL = "https://api.openai.com/v1"


def url_host(url: str) -> str:
    """``host[:port]`` of a URL, without any ``user:password@`` it may carry: safe to store and show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def _config_file() -> Path:
    return Path(os.environ.get("HANDOFF_CONFIG", "handoff.toml"))


class Settings(BaseSettings):
    """Everything an operator can change without touching code."""

    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="ignore", populate_by_name=True, frozen=True)

    # storage
    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "HANDOFF_DATABASE_URL")
    )

    # local open-weight model: which engine runs it (see README "Local engines")
    # auto: chosen for this machine at start-up (playground/hardware.py); reads back as the engine it chose
    local_engine: LocalEngineKind | Literal["auto"] = "auto"
    local_model: str = BUNDLED_MODEL  # a hub id/folder (transformers), a .gguf path (llamacpp), a served name (openai)
    model_cache_dir: Path = Path("data") / "models"
    local_device: str = "auto"  # auto: a GPU torch can use, else "cpu" (playground/hardware.py ``accelerator``)
    local_dtype: str = "auto"  # auto: chosen for this device (playground/engine/device.py)
    # decoding (playground/engine/sampling.py ``Decoding``), on every local engine and the stand-in, stored
    # with each answer: a 135M model decoded without a repetition penalty loops (bench/repetition.py)
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.2, ge=1.0)  # 1.0: off
    no_repeat_ngram_size: int = Field(default=0, ge=0)  # 0: off; not applied by served engines
    # loop detector (feedback/repetition.py): a draft loops once loop_share of its last loop_window word
    # loop_ngram-grams repeat earlier ones; it is then stopped (finish_reason "repetition") when stop_loops
    loop_ngram: int = Field(default=4, ge=1)
    loop_window: int = Field(default=32, ge=1)
    loop_share: float = Field(default=0.75, gt=0.0, le=1.0)
    stop_loops: bool = True
    system_prompt: str = "You are a helpful assistant. Answer clearly and concisely."
    # batching worker: memory bound = rows x padded cache width (SmolLM2: ~23 KB per cache position)
    max_batch_size: int = 16
    max_batch_tokens: int = 32768
    # llamacpp engine (in process): KV cache positions shared by all running sequences; 0 threads = timed at
    # start-up (1 or every CPU; each llama-server: 1); 0 servers = one llama-server per thread count of the CPUs
    llamacpp_n_ctx: int = 16384
    llamacpp_threads: int = 0
    llamacpp_servers: int = Field(default=0, ge=0)
    # openai engine: an OpenAI-compatible server (vLLM, llama.cpp's server) that returns per-token log-probs;
    # several, comma-separated, share the answers (each new answer goes to the one with the least work outstanding)
    local_base_url: str = "http://127.0.0.1:8767/v1"
    local_api_key: SecretStr | None = None
    local_top_logprobs: int = Field(default=20, ge=1, le=20)  # k: entropy is computed from the top k
    local_timeout_s: float = 60.0

    # cloud side of handoff (OpenAI API or any compatible server)
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "HANDOFF_OPENAI_API_KEY")
    )
    cloud_base_url: str | None = None
    cloud_model: str | None = None
    cloud_timeout_s: float = 30.0
    cloud_max_retries: int = 2
    # the cloud is sent the local Decoding as ``transformers serve``'s generation_config (a small model
    # served like the stand-in); None: only when it is the stand-in. A real cloud keeps its defaults.
    cloud_local_decoding: bool | None = None
    standin_host: str = "127.0.0.1"
    standin_port: int = 8766

    # handoff (see README "Handoff policies"); an event's own policy/threshold/shadow rate win
    handoff_policy: str = "confidence"
    handoff_threshold: float = 0.5
    handoff_fallback_policy: str = "confidence"  # used when the chosen policy can't run (untrained router…)
    shadow_rate: float = Field(default=0.1, ge=0.0, le=1.0)  # ε: share of kept-local turns also sent to the cloud
    early_handoff: bool = True  # a post policy may decide while the local draft is still being written
    early_min_tokens: int = 8  # …but not before this many tokens
    cloud_prices: PriceTable = PriceTable()  # versioned; the version is stored with every cost
    cloud_rate_limit: str = "10/minute"  # cloud calls per participant (handoffs and shadows together)
    cloud_backoff_s: float = 0.5  # first retry wait; doubles per retry up to cloud_backoff_max_s
    cloud_backoff_max_s: float = 4.0

    # energy per answer (feedback.energy, shown at the reveal, summed in the report and overview)
    local_power_watts: float = Field(default=35.0, gt=0)  # the local device's draw while generating; measure yours
    energy_provider: str = "openai"  # EcoLogits' name for the cloud model's provider
    energy_fallback_model: str = "gpt-4.1-mini"  # EcoLogits figures used for a cloud model it does not list

    # researcher exports: participant ids are re-hashed with this salt; unset means a fresh random
    # salt per export, so two releases can't be joined unless the organizer sets (and keeps) one
    export_salt: SecretStr | None = None
    export_licence: str | None = None  # the card's licence for events without one (None: "not set")

    # attendee limits
    max_prompt_chars: int = 8000
    max_comment_chars: int = 2000
    max_turns: int = 10
    max_prompts_per_minute: int = 6  # started turns per participant (stopped ones too), across tabs and replicas
    max_running_turns_per_event: int = 32  # turns being answered at once per event, across replicas; 0: no cap
    turn_slot_ttl_s: float = 600.0  # a running turn of a crashed replica stops counting after this long
    # keeps a participant across reloads in the same browser (signed cookie); unset: a random key per
    # process, so set it when several replicas serve one event
    participant_secret: SecretStr | None = None

    # where the per-participant cloud-call limit is counted (`limits` storage URI): memory:// is one
    # process; several replicas share redis://host:6379 (docs/deploy.md)
    rate_limit_storage: SecretStr = SecretStr("memory://")
    rate_limit_prefix: str = "handoff"  # keeps two deployments on one Redis apart

    # organizer side
    organizer_password: SecretStr | None = None  # bootstrap admin for offline events; only its hash is kept

    _engine_reason: str = PrivateAttr(default="set by HANDOFF_LOCAL_ENGINE")
    _device_reason: str = PrivateAttr(default="set by HANDOFF_LOCAL_DEVICE")

    @model_validator(mode="after")
    def _choose_engine(self) -> Settings:
        """``auto`` becomes the device and the engine measured fastest for this kind of machine, so every reader
        sees a real device and kind."""
        if self.local_device == "auto":
            device = accelerator()
            object.__setattr__(self, "local_device", device.device)  # frozen model: set once, while validating
            self._device_reason = device.reason
        if self.local_engine != "auto":
            return self  # set explicitly: nothing to read off the machine
        runs_gguf = self.local_model == BUNDLED_MODEL or self.local_model.endswith(".gguf")
        choice = choose_engine(
            self.local_engine,
            self.local_device,
            self.local_dtype,
            runs_gguf,
            cpu_flags(),
            llama_cpp_installed(),
            llama_server_binary() is not None,
        )
        object.__setattr__(self, "local_engine", choice.kind)  # frozen model: set once, while validating
        self._engine_reason = choice.reason
        return self

    @property
    def local_engine_reason(self) -> str:
        """Why ``local_engine`` is what it is (printed by ``handoff serve``)."""
        return self._engine_reason

    @property
    def local_device_reason(self) -> str:
        """Why ``local_device`` is what it is (printed by ``handoff serve``)."""
        return self._device_reason

    @field_validator("organizer_password")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        """The bootstrap admin sees every event: a short password is refused at start-up, not guessed later."""
        if value is not None and 0 < len(value.get_secret_value()) < MIN_PASSWORD_CHARS:
            raise ValueError(f"HANDOFF_ORGANIZER_PASSWORD: use at least {MIN_PASSWORD_CHARS} characters.")
        return value

    organizer_admin_username: str = "admin"
    organizer_session_minutes: int = 480  # a sign-in expires after this long
    organizer_lockout_after: int = 5  # failed sign-ins before the account locks
    organizer_lockout_base_s: float = 30.0  # first lock-out; doubles with each further failure
    organizer_refresh_s: float = 5.0  # live overview auto-refresh
    wall_refresh_s: float = 5.0  # public results wall (/wall?event=CODE) auto-refresh
    public_url: str | None = None  # base URL attendees open (QR codes); default http://localhost:<port>

    # web: loopback by default; to open it to the event's network, put a TLS reverse proxy in front
    # (README, "Serving on a network") and set public_url to its https:// address
    host: str = "127.0.0.1"
    port: int = 8501

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return init_settings, env_settings, toml, file_secret_settings

    @property
    def loop_rule(self) -> LoopRule:
        """When a draft counts as looping (feedback.repetition)."""
        return LoopRule(ngram=self.loop_ngram, window=self.loop_window, share=self.loop_share)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'playground.db').resolve()}"

    @property
    def export_salt_bytes(self) -> bytes | None:
        """The configured export salt as the exporter takes it (None: a fresh one per export)."""
        return self.export_salt.get_secret_value().encode() if self.export_salt else None

    @property
    def uses_standin(self) -> bool:
        """True when the cloud side is the local OpenAI-compatible stand-in server."""
        if self.cloud_base_url:
            return False
        return self.openai_api_key is None

    @property
    def cloud_gets_local_decoding(self) -> bool:
        """True when the cloud is sent the local ``Decoding`` (see ``cloud_local_decoding``)."""
        return self.uses_standin if self.cloud_local_decoding is None else self.cloud_local_decoding

    @property
    def resolved_cloud_base_url(self) -> str:
        if self.cloud_base_url:
            return self.cloud_base_url
        if self.openai_api_key is not None:
            return OPENAI_BASE_URL
        return f"http://{self.standin_host}:{self.standin_port}/v1"

    @property
    def cloud_host(self) -> str:
        """The host (and port) of the cloud base URL: what may be recorded. Never the key, nor a
        ``user:password@`` part of the URL."""
        return url_host(self.resolved_cloud_base_url)

    @property
    def served_in_clear_publicly(self) -> bool:
        """Bound beyond loopback without an https:// public URL: passwords would cross the network in clear."""
        loopback = self.host in ("localhost", "::1") or self.host.startswith("127.")
        return not loopback and not (self.public_url or "").lower().startswith("https://")

    @property
    def local_base_urls(self) -> tuple[str, ...]:
        """Each local model server's base URL (``local_base_url`` may name several, comma-separated)."""
        return tuple(url.strip() for url in self.local_base_url.split(",") if url.strip())

    @property
    def local_host(self) -> str:
        """The host part of the local model servers' URLs, comma-separated: what may be shown (never the key)."""
        return ",".join(url_host(url) for url in self.local_base_urls)

    @property
    def served_model_name(self) -> str:
        """The model name the openai engine asks its server for (`handoff serve` starts it under this name)."""
        return BUNDLED_MODEL_NAME if self.local_model == BUNDLED_MODEL else self.local_model

    @property
    def cloud_api_key(self) -> str:
        # The stand-in ignores the key, but the openai client requires one.
        return self.openai_api_key.get_secret_value() if self.openai_api_key else "standin-no-key"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read settings once per process."""
    return Settings()
