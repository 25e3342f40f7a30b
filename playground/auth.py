"""Organizer sign-in: Argon2 password hashes, lock-out with back-off, expiring sign-ins, roles.

Plain Python (no Streamlit) so the CLI, the pages and the tests share one set of rules. Passwords are
only ever kept as Argon2id hashes (``argon2-cffi`` verifies in constant time). The bootstrap admin's
password comes from settings (``HANDOFF_ORGANIZER_PASSWORD``); it is hashed once per process and its
database row holds only a marker, so its lock-out survives restarts without the secret reaching the
database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import ROLES, Event, Organizer, SignInThrottle, utcnow
from db.session import session_scope
from playground.settings import MIN_PASSWORD_CHARS, Settings

# Stored instead of a hash for the bootstrap admin: "check against the password in settings".
SETTINGS_PASSWORD = "settings:HANDOFF_ORGANIZER_PASSWORD"
MAX_LOCKOUT = dt.timedelta(hours=1)
USERNAME_CHARS = 100  # the column's length

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong username costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class SignInRefused(PermissionError):
    """Wrong username or password, or an account that may not sign in; the message says what to do."""


class AccountLocked(SignInRefused):
    def __init__(self, until: dt.datetime, now: dt.datetime) -> None:
        seconds = max(1, int((until - now).total_seconds() + 0.999))
        super().__init__(f"Too many failed sign-ins. Try again in {seconds} seconds.")
        self.until = until


class OrganizerInvalid(ValueError):
    """An organizer account that can't be created as asked; the message says how to fix it."""


@dataclass(frozen=True)
class Identity:
    """Who is signed in, and until when. Held in the Streamlit session, never the password."""

    username: str
    role: str  # admin | organizer
    event_id: int | None  # the one event of an organizer; None for an admin
    expires_at: dt.datetime
    account: str | None = None  # ``account_fingerprint`` at sign-in: a changed account ends the sign-in

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def expired(self, now: dt.datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at

    def may_see(self, event_id: int) -> bool:
        """Admins see every event; an organizer only their own."""
        return self.is_admin or self.event_id == event_id


def account_fingerprint(organizer: Organizer) -> str:
    """Changes whenever the account's password, role or event changes, or it is removed and recreated."""
    material = f"{organizer.id}|{organizer.username}|{organizer.password_hash}|{organizer.role}|{organizer.event_id}"
    return hashlib.sha256(material.encode()).hexdigest()


def still_valid(session: Session, identity: Identity) -> bool:
    """True while the account behind a sign-in is unchanged (checked on every organizer page run)."""
    organizer = session.scalar(select(Organizer).where(Organizer.username == identity.username))
    return organizer is not None and account_fingerprint(organizer) == identity.account


def hash_password(password: str) -> str:
    """An Argon2id hash (salted, memory-hard) to store instead of the password."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Constant-time check of a password against a stored hash; False for a malformed hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=4)
def _hash_of_secret(secret: SecretStr) -> str:
    return hash_password(secret.get_secret_value())


def _settings_password_hash(settings: Settings) -> str | None:
    """The bootstrap admin password's hash, made once per process (it is never stored anywhere)."""
    if settings.organizer_password is None or not settings.organizer_password.get_secret_value():
        return None
    return _hash_of_secret(settings.organizer_password)


def lockout_until(failed_attempts: int, now: dt.datetime, settings: Settings) -> dt.datetime | None:
    """When the account unlocks after this many consecutive failures: doubling back-off, capped at 1 h."""
    extra = failed_attempts - settings.organizer_lockout_after
    if extra < 0:
        return None
    seconds = settings.organizer_lockout_base_s * 2 ** min(extra, 20)
    return now + min(dt.timedelta(seconds=seconds), MAX_LOCKOUT)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment


def _bootstrap_admin(session: Session, settings: Settings) -> Organizer | None:
    """The settings-password admin's row (created on first use) when a password is configured."""
    if _settings_password_hash(settings) is None:
        return None
    organizer = Organizer(username=settings.organizer_admin_username, password_hash=SETTINGS_PASSWORD, role="admin")
    session.add(organizer)
    session.flush()
    return organizer


def _throttle_key(username: str) -> str:
    """The username as a throttle key the column holds (no NUL: PostgreSQL refuses it)."""
    return username.replace("\x00", "\ufffd")[:USERNAME_CHARS]


@dataclass(frozen=True)
class _Attempt:
    """An attempt counted before its password is checked (so parallel attempts can't all pass the lock)."""

    organizer: Organizer | None  # detached copy; None for a username without an account
    attempts: int  # consecutive failures, this attempt counted as one until it succeeds


def _begin_attempt(session: Session, username: str, settings: Settings, now: dt.datetime) -> _Attempt:
    """Count the attempt under a row lock; raise ``AccountLocked`` when the account (or the
    unknown username) is locked, by earlier failures or by attempts still being checked."""
    key = _throttle_key(username)
    # a write first: takes the row lock (PostgreSQL) or the write lock (SQLite) before anything is read
    session.execute(
        update(Organizer).where(Organizer.username == key).values(failed_attempts=Organizer.failed_attempts)
    )
    organizer = session.scalar(select(Organizer).where(Organizer.username == key))
    if organizer is None and key == settings.organizer_admin_username:
        organizer = _bootstrap_admin(session, settings)
    row: Organizer | SignInThrottle | None = organizer
    if row is None:
        row = session.get(SignInThrottle, key, with_for_update=True)
        if row is None:
            try:
                with session.begin_nested():  # a parallel attempt may insert the same username first
                    row = SignInThrottle(username=key, failed_attempts=0)
                    session.add(row)
            except IntegrityError:
                row = session.get(SignInThrottle, key, with_for_update=True, populate_existing=True)
    locked_until = _aware(row.locked_until)
    if locked_until is not None and locked_until > now:
        raise AccountLocked(locked_until, now)
    row.failed_attempts = (row.failed_attempts or 0) + 1
    # locked from now on should this attempt fail, so the next parallel attempt is refused at once
    row.locked_until = lockout_until(row.failed_attempts, now, settings)
    session.flush()
    if organizer is not None:
        session.expunge(organizer)
    return _Attempt(organizer, row.failed_attempts)


def _end_attempt(session: Session, organizer: Organizer, password: str, now: dt.datetime) -> None:
    """A verified sign-in: clear the failures (and the lock this attempt set), rehash if due."""
    values: dict = {"failed_attempts": 0, "locked_until": None, "last_login_at": now}
    if organizer.password_hash != SETTINGS_PASSWORD and _hasher.check_needs_rehash(organizer.password_hash):
        values["password_hash"] = organizer.password_hash = hash_password(password)
    session.execute(update(Organizer).where(Organizer.id == organizer.id).values(**values))


def attempt_sign_in(
    url: str, username: str, password: str, settings: Settings, now: dt.datetime | None = None
) -> Identity:
    """Check a sign-in; count failures and lock with back-off.

    Atomic under parallel attempts: each attempt is counted (and the lock its failure would cause is
    set) in its own transaction *before* the slow hash is checked, so nine wrong passwords and the
    right one sent at once cannot all pass the lock check. A username without an account is counted
    and locked the same way, so the messages don't tell which usernames exist.
    """
    now = now or utcnow()
    username = username.strip()
    refused: SignInRefused | None = None
    with session_scope(url) as session:
        try:
            attempt = _begin_attempt(session, username, settings, now)
        except AccountLocked as error:
            refused = error
    if refused is not None:
        raise refused
    organizer = attempt.organizer
    if organizer is None:
        verify_password(_DUMMY_HASH, password)
        ok = False
    elif organizer.password_hash == SETTINGS_PASSWORD:
        stored = _settings_password_hash(settings)
        ok = stored is not None and verify_password(stored, password)
    else:
        ok = verify_password(organizer.password_hash, password)
    if not ok:
        until = lockout_until(attempt.attempts, now, settings)
        if until is not None:
            raise AccountLocked(until, now)
        raise SignInRefused("Wrong username or password.")
    with session_scope(url) as session:
        _end_attempt(session, organizer, password, now)
    return Identity(
        username=organizer.username,
        role=organizer.role,
        event_id=organizer.event_id if organizer.role == "organizer" else None,
        expires_at=now + dt.timedelta(minutes=settings.organizer_session_minutes),
        account=account_fingerprint(organizer),
    )


def add_organizer(session: Session, username: str, password: str, role: str, event: Event | None = None) -> Organizer:
    """Create an organizer account (CLI): organizers belong to one event, admins to none."""
    username = username.strip()
    if not username:
        raise OrganizerInvalid("Give a username.")
    if role not in ROLES:
        raise OrganizerInvalid(f"Role must be one of: {', '.join(ROLES)}.")
    if role == "organizer" and event is None:
        raise OrganizerInvalid("An organizer belongs to one event: pass --event CODE (or use --role admin).")
    if role == "admin" and event is not None:
        raise OrganizerInvalid("An admin sees every event: drop --event, or use --role organizer.")
    if len(password) < MIN_PASSWORD_CHARS:
        raise OrganizerInvalid(f"Use a password of at least {MIN_PASSWORD_CHARS} characters.")
    if session.scalar(select(Organizer.id).where(Organizer.username == username)) is not None:
        raise OrganizerInvalid(f"The username {username!r} is taken; pick another one.")
    organizer = Organizer(
        username=username, password_hash=hash_password(password), role=role, event_id=event.id if event else None
    )
    session.add(organizer)
    session.flush()
    return organizer


def unlock(session: Session, username: str) -> bool:
    """Clear a lock-out (CLI); False when there is no such account."""
    result = session.execute(
        update(Organizer).where(Organizer.username == username).values(failed_attempts=0, locked_until=None)
    )
    return result.rowcount > 0
