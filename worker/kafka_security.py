"""Kafka client security, in one place for every Kafka client the product creates.

The settings (README, "Security and endpoints") are the worker's RISK_SECURITY_PROTOCOL,
RISK_SASL_MECHANISM / _USERNAME / _PASSWORD and RISK_SSL_CAFILE / _CERTFILE / _KEYFILE /
_KEY_PASSWORD (flags of the same names). :class:`KafkaSecurity` holds them, checks that they can
work together, and gives

* the keyword arguments of an aiokafka producer, consumer or admin client (:meth:`client_kwargs`);
* the Faust ``broker_credentials`` of the worker's app (:meth:`faust_credentials`);
* the constructors every module uses (:func:`new_producer`, :func:`new_consumer`, :func:`new_admin`):
  no other module of the product builds an aiokafka client (tests/test_security.py checks it).

A client given no security (``None``) takes it from the RISK_* environment, like the worker does:
the worker's Faust app and mark reader, the fund agent, the recovery helper, ``topics``, the
simulator, the harness's readers and writers. The demo passes its embedded broker's (PLAINTEXT).
"""
from __future__ import annotations

import argparse
import ssl
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, Mapping

from .settings import SETTINGS, Setting, SettingsError, resolve_values

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from .settings import WorkerSettings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# KafkaSecurity field → the worker setting it comes from (worker/settings.py)
SETTING_OF = {
    "protocol": "security_protocol", "sasl_mechanism": "sasl_mechanism", "sasl_username": "sasl_username",
    "sasl_password": "sasl_password", "ssl_cafile": "ssl_cafile", "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile", "ssl_key_password": "ssl_key_password",
}
SECURITY_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.name in SETTING_OF.values())
_ENV = {s.name: s.env for s in SECURITY_SETTINGS}


class SecurityError(SettingsError):
    """Security settings that cannot work (the commands print it and exit)."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        protocol = self.protocol.strip().upper()
        if protocol not in PROTOCOLS:
            raise SecurityError(f"RISK_SECURITY_PROTOCOL={self.protocol!r}: one of {', '.join(PROTOCOLS)}")
        object.__setattr__(self, "protocol", protocol)
        if self.sasl:
            mechanism = (self.sasl_mechanism.strip() or "PLAIN").upper()
            if mechanism not in MECHANISMS:
                raise SecurityError(f"RISK_SASL_MECHANISM={self.sasl_mechanism!r}: one of {', '.join(MECHANISMS)}")
            object.__setattr__(self, "sasl_mechanism", mechanism)
            if not self.sasl_username or not self.sasl_password:
                raise SecurityError(f"{protocol} needs RISK_SASL_USERNAME and RISK_SASL_PASSWORD")
        else:
            self._refuse_unused(("sasl_mechanism", "sasl_username", "sasl_password"), "SASL")
        if self.tls:
            if (self.ssl_keyfile or self.ssl_key_password) and not self.ssl_certfile:
                raise SecurityError("RISK_SSL_KEYFILE / RISK_SSL_KEY_PASSWORD need RISK_SSL_CERTFILE (mutual TLS)")
        else:
            self._refuse_unused(("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password"), "TLS")

    def _refuse_unused(self, names: tuple[str, ...], what: str) -> None:
        """A credential set for a protocol that does not use it is a mistake, not something to ignore."""
        unused = [_ENV[SETTING_OF[name]] for name in names if getattr(self, name)]
        if unused:
            raise SecurityError(f"{', '.join(unused)} set, but RISK_SECURITY_PROTOCOL={self.protocol} uses no {what}")

    # ------------------------------------------------------------------ sources
    @classmethod
    def from_settings(cls, settings: "WorkerSettings") -> "KafkaSecurity":
        return cls(**{name: getattr(settings, setting) for name, setting in SETTING_OF.items()})

    @classmethod
    def resolve(cls, args: argparse.Namespace | None = None,
                environ: Mapping[str, str] | None = None) -> "KafkaSecurity":
        """Flag, else RISK_* environment variable, else default (as worker/settings.py resolves)."""
        values = resolve_values(SECURITY_SETTINGS, args, environ)
        return cls(**{name: values[setting] for name, setting in SETTING_OF.items()})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "KafkaSecurity":
        return cls.resolve(None, environ)

    def env(self) -> dict[str, str]:
        """These settings as RISK_* environment variables (for a worker process started by the demo)."""
        return {_ENV[SETTING_OF[f.name]]: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------------------------ clients
    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """One TLS context per settings object, shared by the clients built from it: verifies the
        brokers (the CA file, else the system's CAs, and their host names) and, with a certificate,
        presents it (mutual TLS)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile or None)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None,
                                        password=self.ssl_key_password or None)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise SecurityError(f"TLS settings (RISK_SSL_*): {exc}") from None
        return context

    def check(self) -> "KafkaSecurity":
        """Fail now, with the reason, if the files cannot be loaded (rather than at the first connection)."""
        self.ssl_context  # noqa: B018
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl:
            kwargs.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        return kwargs

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials``: Faust turns them into the same client kwargs."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                         mechanism=self.sasl_mechanism, ssl_context=self.ssl_context)
        if self.tls:
            return faust.SSLCredentials(self.ssl_context)
        return None


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    """The security flags, for commands that take only those (``topics``)."""
    for setting in SECURITY_SETTINGS:
        parser.add_argument("--" + setting.name.replace("_", "-"), dest=setting.name, default=None,
                            help=f"{setting.help} [env {setting.env}]")


def _security(security: KafkaSecurity | None) -> KafkaSecurity:
    return KafkaSecurity.from_env() if security is None else security


def new_producer(bootstrap: str, security: KafkaSecurity | None = None, **kwargs: Any) -> "AIOKafkaProducer":
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, **_security(security).client_kwargs(), **kwargs)


def new_consumer(bootstrap: str, *topics: str, security: KafkaSecurity | None = None,
                 **kwargs: Any) -> "AIOKafkaConsumer":
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **_security(security).client_kwargs(), **kwargs)


def new_admin(bootstrap: str, security: KafkaSecurity | None = None, **kwargs: Any) -> "AIOKafkaAdminClient":
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_security(security).client_kwargs(), **kwargs)
