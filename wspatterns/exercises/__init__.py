"""Exercises: a checker runs your answer against scripted clients and says what is right and wrong.

Each pattern lesson ends with an exercise: you write a function that builds a
handler from the business logic it is given, the way the reference patterns
do, for example ``bye_consumer(consume)``. The checker passes in its own
``consume`` or ``produce``, serves your handler, drives it with clients, watches
what it does, and returns a :class:`Report`: one line per thing it checked, in
plain words, each ✔ (passed), ✘ (failed) or – (not reached: what it depends on
never happened). Every wait is bounded, so a checker ends even when a handler hangs.

    await check_consumer(bye_consumer)

One module per exercise: :mod:`~wspatterns.exercises.consumer` (lesson 01),
:mod:`~wspatterns.exercises.producer` (02),
:mod:`~wspatterns.exercises.consumer_and_producer` (03),
:mod:`~wspatterns.exercises.queue_workers` (03b), :mod:`~wspatterns.exercises.chat_room`
(04), :mod:`~wspatterns.exercises.resuming_client` (05: the exercise on Redis Streams
is a client, ``follow(url, channel, received)``, run against a server that closes its
connection and restarts) and :mod:`~wspatterns.exercises.room_history` (06: a chat room
that sends whoever joins what was said before). What they share is in
:mod:`~wspatterns.exercises.harness`, :mod:`~wspatterns.exercises.scripted` and
:mod:`~wspatterns.exercises.report`.

A checker of your own is written with the same pieces, exported here; the guide
``notebooks/make_a_lesson.ipynb`` builds a lesson and its checker with them:

- business logic, scripted: :class:`ScriptedConsume`, :class:`ScriptedProduce`, or a
  subclass of :class:`ScriptedLogic` for another shape;
- your handler, built and served under watch: :func:`build`, :func:`serving`, :class:`Watch`;
- a scripted client and bounded waits: :func:`checker_client`, :func:`send_all`,
  :func:`receive`, :func:`next_message`, :func:`in_time`, :func:`until`, each bounded by a
  few times :data:`GRACE`;
- the lines of a :class:`Report`: ``report.add(...)``, ``report.skip(...)`` (not reached),
  and :func:`judge_end` for how the handler ended.
"""

from __future__ import annotations

from .chat_room import check_chat_room
from .consumer import check_consumer
from .consumer_and_producer import check_consumer_and_producer
from .harness import (
    GRACE,
    Watch,
    build,
    checker_client,
    in_time,
    judge_end,
    next_message,
    receive,
    send_all,
    serving,
    until,
)
from .producer import check_producer
from .queue_workers import check_workers
from .report import Mark, Report

# Last: it needs Redis and the pub/sub room, which the other exercises do not.
from .resuming_client import check_resuming_client
from .room_history import check_room_history
from .scripted import ScriptedConsume, ScriptedLogic, ScriptedProduce
from .solutions import solution

__all__ = [
    "GRACE",
    "Mark",
    "Report",
    "ScriptedConsume",
    "ScriptedLogic",
    "ScriptedProduce",
    "Watch",
    "build",
    "check_chat_room",
    "check_consumer",
    "check_consumer_and_producer",
    "check_producer",
    "check_resuming_client",
    "check_room_history",
    "check_workers",
    "checker_client",
    "in_time",
    "judge_end",
    "next_message",
    "receive",
    "send_all",
    "serving",
    "solution",
    "until",
]
