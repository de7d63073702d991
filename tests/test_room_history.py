"""The checker of lesson 06's exercise, proven by wrong answers (and passed by ours)."""

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import broadcast

from wspatterns import exercises
from wspatterns.exercises import Mark, solution

from .test_exercises import SOLUTIONS


def name_of(websocket):
    return parse_qs(urlsplit(websocket.request.path).query).get("name", ["anonymous"])[0]


def said(name, text):
    return json.dumps({"from": name, "text": text})


def forgets(members, history):  # the lesson's starter: a room with no memory
    async def chat(websocket):
        name = name_of(websocket)
        members.add(websocket)
        try:
            async for text in websocket:
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def remembers_but_never_tells(members, history):
    async def chat(websocket):
        name = name_of(websocket)
        members.add(websocket)
        try:
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def newest_first(members, history):
    async def chat(websocket):
        name = name_of(websocket)
        for message in reversed(history):
            broadcast([websocket], message)
        members.add(websocket)
        try:
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def tells_everyone(members, history):
    async def chat(websocket):
        name = name_of(websocket)
        members.add(websocket)
        for message in history:
            broadcast(members, message)  # the newcomer, and everyone else again
        try:
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def keeps_only_the_text(members, history):
    async def chat(websocket):
        name = name_of(websocket)
        for message in history:
            broadcast([websocket], message)
        members.add(websocket)
        try:
            async for text in websocket:
                history.append(text)  # who said it is lost
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def awaits_between(members, history):  # sends the history, pauses, then registers: racy
    async def chat(websocket):
        name = name_of(websocket)
        for message in history:
            await websocket.send(message)
        await asyncio.sleep(0.01)
        members.add(websocket)
        try:
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def registers_first_and_awaits(members, history):  # what is said meanwhile cuts in
    async def chat(websocket):
        name = name_of(websocket)
        members.add(websocket)
        try:
            for message in list(history):
                await websocket.send(message)
                await asyncio.sleep(0.005)
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def tells_the_history_late(members, history):  # the newcomer hears the room, then its past
    async def chat(websocket):
        name = name_of(websocket)
        members.add(websocket)
        try:
            await asyncio.sleep(0.1)  # longer than the talk that used to follow a join
            for message in history:
                broadcast([websocket], message)
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def pauses_for_a_moment(members, history):  # one turn of the loop between history and joining
    async def chat(websocket):
        name = name_of(websocket)
        for message in history:
            broadcast([websocket], message)
        await asyncio.sleep(0)
        members.add(websocket)
        try:
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def pauses_before_the_history(members, history):  # right: what is said meanwhile is history
    async def chat(websocket):
        name = name_of(websocket)
        await asyncio.sleep(0.01)
        for message in history:
            broadcast([websocket], message)
        members.add(websocket)
        try:
            async for text in websocket:
                history.append(said(name, text))
                broadcast(members, said(name, text))
        finally:
            members.remove(websocket)

    return chat


def never_unregisters(members, history):
    async def chat(websocket):
        name = name_of(websocket)
        for message in history:
            broadcast([websocket], message)
        members.add(websocket)
        async for text in websocket:
            history.append(said(name, text))
            broadcast(members, said(name, text))

    return chat


def fails(report, *phrases):
    """The report failed, and its failures say each of ``phrases``."""
    text = "\n".join(report.failures)
    return not report and all(phrase in text for phrase in phrases)


async def test_the_solution_passes():
    report = await exercises.check_room_history(
        solution("06_room_history", SOLUTIONS).chat_with_history
    )
    assert report, report
    assert report.judged == len(report.lines) == 9


async def test_the_starter_fails_and_what_depends_on_history_is_not_reached():
    report = await exercises.check_room_history(forgets)
    assert fails(report, "`history` held []"), report
    assert report.not_reached == [
        "Whether bob was sent the history on joining: not reached (`history` stayed empty)."
    ]


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (remembers_but_never_tells, ["bob, joining, was sent [] instead of"]),
        (
            newest_first,
            ["oldest first", '"text": "m7"'],
        ),
        (tells_everyone, ["When bob joined, alice was sent"]),
        (keeps_only_the_text, ["`history` held ['m3', 'm4'"]),
        (never_unregisters, ["`members` still held 3"]),
        # carol, or a later newcomer if carol's join proved nothing (see the tests below)
        (awaits_between, ["joined while alice said t", "no `await` in between"]),
        (registers_first_and_awaits, ["joined while alice said t"]),
        (tells_the_history_late, ["joined while alice said t", "she was sent"]),
    ],
)
async def test_a_wrong_answer_is_told_what_is_wrong(wrong, phrases):
    report = await exercises.check_room_history(wrong)
    assert fails(report, *phrases), report


async def test_a_room_that_relays_nothing_passes_nothing_about_history():
    def silent(members, history):
        async def chat(websocket):
            async for _ in websocket:
                pass

        return chat

    report = await exercises.check_room_history(silent)
    assert not report
    passed = [text for mark, text in report.lines if mark is Mark.PASSED]
    assert passed == ["Nothing your handler started was left running after everyone left."]
    assert len(report.not_reached) == 4, report


async def test_a_pause_too_short_to_test_never_passes():
    """Between the history and `members.add`, one turn of the loop: whatever is said then
    would be lost, but nothing may be said. The checker passes only on evidence: it fails
    (something said was lost) or says the join went untested, after trying every newcomer."""
    report = await exercises.check_room_history(pauses_for_a_moment)
    assert not report, report
    untested = "Whether a newcomer is sent everything said while she joins: not reached"
    assert fails(report, "joined while alice said t") or (
        not report.failures and report.not_reached[0].startswith(untested)
    ), report


async def test_a_pause_before_the_history_passes():
    """A pause before the history is read and the newcomer joins loses nothing: what is said
    meanwhile is in the history she is sent."""
    report = await exercises.check_room_history(pauses_before_the_history)
    assert report, report
