// A bounded, in-memory event store for one MCP session: it lets a client that lost an SSE
// stream reconnect with `Last-Event-ID` and receive what it missed.
//
// Event ids are `<streamId>|<seq>`: the stream is recoverable from the id alone, and `seq` is
// one counter for the whole session, so order within a stream is the order of `seq`.
// Only the newest `limit` events are kept; resuming from an event that has been dropped is
// refused (the transport answers 400) rather than silently skipping what fell out.

const SEPARATOR = '|';

export class SessionEventStore {
  constructor(limit = 1024) {
    this.limit = limit;
    this.seq = 0;
    // Insertion order is seq order: a Map keeps it, and the oldest key is the first one.
    this.events = new Map();
  }

  async storeEvent(streamId, message) {
    this.seq += 1;
    const eventId = `${streamId}${SEPARATOR}${this.seq}`;
    this.events.set(eventId, { streamId, seq: this.seq, message });
    while (this.events.size > this.limit) {
      const oldest = this.events.keys().next().value;
      this.events.delete(oldest);
    }
    return eventId;
  }

  async getStreamIdForEventId(eventId) {
    return this.events.get(eventId)?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const last = this.events.get(lastEventId);
    if (last === undefined) {
      throw new Error(`unknown or expired event id: ${lastEventId}`);
    }
    // Snapshot first: `send` awaits, and new events may be stored meanwhile (the transport
    // delivers those itself once the stream is registered again).
    const later = [...this.events.entries()].filter(
      ([, e]) => e.streamId === last.streamId && e.seq > last.seq,
    );
    for (const [eventId, event] of later) {
      // Priming events carry an empty message: they exist only to hand the client an id.
      if (event.message && 'jsonrpc' in event.message) {
        await send(eventId, event.message);
      }
    }
    return last.streamId;
  }
}
