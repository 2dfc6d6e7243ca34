"""Acks of one consuming channel, sent in runs.

A worker acks a ticket once its claim is committed, and one claim statement serves many
tickets, so their acks come in bursts. Acks asked for in one pass of the event loop go
together at its end: the highest settled delivery tag below every unsettled one goes in
one frame with multiple=True, which acks every tag up to it; an ack above a ticket not
settled yet goes alone, then, so no ack waits on another ticket. Frames are written in
the order planned, so a later run that covers an earlier lone ack's tag comes after it.
A reject always goes alone and at once, and its ticket counts as unsettled until its
frame is written, so no multiple ack can cover a ticket that is being returned.
"""

from __future__ import annotations

import asyncio
import contextlib

from aio_pika.abc import AbstractIncomingMessage


class Acks:
    def __init__(self) -> None:
        # The delivery tags of tickets taken and not settled; tags only grow on a channel.
        self._open: set[int] = set()
        # Acked by the worker, not sent yet; and the end of the pass that sends them.
        self._due: list[AbstractIncomingMessage] = []
        self._sent: asyncio.Future[None] | None = None
        # Planned frames, written one after the other by one sender.
        self._outbox: list[
            tuple[list[tuple[AbstractIncomingMessage, bool]], asyncio.Future[None]]
        ] = []
        self._sender: asyncio.Task[None] | None = None
        # Frames written: an ack of a run counts one.
        self.frames = 0

    def taken(self, ticket: AbstractIncomingMessage) -> None:
        """A ticket the consumer has handed over; every ticket is taken in tag order."""
        self._open.add(_tag(ticket))

    def unsettled(self, ticket: AbstractIncomingMessage) -> bool:
        """Taken, and neither acked nor rejected yet."""
        return _tag(ticket) in self._open

    async def ack(self, ticket: AbstractIncomingMessage) -> None:
        """Ack at the end of this pass of the loop, in one frame with the other acks if
        they are contiguous; returns once the frame is written."""
        self._open.discard(_tag(ticket))
        self._due.append(ticket)
        if self._sent is None:
            loop = asyncio.get_running_loop()
            self._sent = loop.create_future()
            loop.call_soon(self._flush)
        await asyncio.shield(self._sent)

    async def reject(self, ticket: AbstractIncomingMessage) -> None:
        """Return a ticket to the queue now; a closed channel has returned it already."""
        try:
            self.frames += 1
            with contextlib.suppress(Exception):
                await ticket.reject(requeue=True)
        finally:
            self._open.discard(_tag(ticket))

    def _flush(self) -> None:
        due, self._due = sorted(self._due, key=_tag), []
        sent, self._sent = self._sent, None
        assert sent is not None  # set by the ack that scheduled this flush
        lowest_open = min(self._open, default=None)
        run = [t for t in due if lowest_open is None or _tag(t) < lowest_open]
        frames = [(run[-1], True)] if run else []
        frames += [(t, False) for t in due[len(run) :]]
        # In the order planned: a later run may cover the tags of this pass's lone acks,
        # and an ack of a tag a run has acked already closes the channel.
        self._outbox.append((frames, sent))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        while self._outbox:
            frames, sent = self._outbox.pop(0)
            try:
                for ticket, multiple in frames:
                    self.frames += 1
                    with contextlib.suppress(Exception):  # a closed channel returned them all
                        await ticket.ack(multiple=multiple)
            finally:
                sent.set_result(None)


def _tag(ticket: AbstractIncomingMessage) -> int:
    tag = ticket.delivery_tag
    assert tag is not None  # a consumed message always has one
    return tag
