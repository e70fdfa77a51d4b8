/**
 * "error" events that nobody listens to. Node throws such an event as an exception, and in a
 * learner's real process that ends the process; inside a check it would surface only as an
 * unhandled error outside any test, while every test reports success. Hearing it here lets a
 * check fail the test that provoked it, with the cause.
 */
import { EventEmitter } from "node:events";
import { check } from "./kit.ts";
import { before, dropConnection, type SentCommand } from "./wire.ts";

/**
 * Who threw, as the check saw it: the learner's callback, which the check made fail, or
 * JSON.parse, on the message that is not JSON the check published in the same burst.
 */
function thrower(error: unknown, callback: string, item: string): string {
  return error instanceof SyntaxError
    ? "JSON.parse threw on a message that is not JSON (the check published one, as someone debugging by hand does)"
    : `${callback}() threw for ${item} (the check made it fail, as a render can)`;
}

/**
 * What to catch around, for the thrower above: when JSON.parse threw, a try around the callback
 * alone (the parse on the line before it) is not enough, and the advice must say so.
 */
function catchAround(error: unknown, callback: string): string {
  return error instanceof SyntaxError
    ? `Put the parse inside the try as well, not only ${callback}(): try { ${callback}(JSON.parse(message)) } catch (error) { log it }, inside your message listener`
    : `Catch around ${callback}() inside your message listener`;
}

/**
 * Until stop(), an "error" event that matches `which` and finds no listener is recorded in
 * `heard` instead of thrown. expectNone() fails the test if one was: `callback` threw for `item`
 * on purpose, and `role` (the dashboard, the watcher) had no listener for it.
 */
export function hearUnheardErrors(which: (error: unknown) => boolean): {
  heard: unknown[];
  /** Matching errors an "error" listener threw again: as fatal as no listener at all. */
  rethrown: unknown[];
  stop(): void;
  expectNone(callback: string, item: string, role: string, hint: number): void;
} {
  const heard: unknown[] = [];
  const rethrown: unknown[] = [];
  const previous = EventEmitter.prototype.emit;
  EventEmitter.prototype.emit = function (
    this: EventEmitter,
    event: string | symbol,
    ...args: unknown[]
  ) {
    if (event !== "error" || !which(args[0])) return previous.call(this, event, ...args);
    if (this.listenerCount("error") === 0) {
      heard.push(args[0]);
      return false;
    }
    try {
      return previous.call(this, event, ...args);
    } catch (error) {
      rethrown.push(error);
      return true;
    }
  };
  return {
    heard,
    rethrown,
    stop: () => {
      EventEmitter.prototype.emit = previous;
    },
    expectNone: (callback, item, role, hint) => {
      check(
        heard.length === 0,
        `${thrower(heard[0], callback, item)}, and node-redis passed that exception to your ${role}'s connection as an "error" event, which had no "error" listener. Node ends a process on an "error" event nobody listens to: your ${role} would have crashed here. ${catchAround(heard[0], callback)} (node-redis 6.3 also drops the messages that came in the same read as the one whose listener threw), and give every connection you open an error listener (subscriber.on("error", ...)) for the errors of the connection itself.`,
        hint,
      );
      check(
        rethrown.length === 0,
        `${thrower(rethrown[0], callback, item)}, node-redis passed that exception to your ${role}'s "error" listener, and the listener threw it again (${String(rethrown[0])}). Nothing catches it there: your ${role}'s process would have crashed. ${catchAround(rethrown[0], callback)}, and let the error listener log the error (or count it), never throw.`,
        hint,
      );
    },
  };
}

/**
 * Until stop(), a rejection nobody handles that matches `which` (any, by default) is recorded in
 * `heard` instead of reaching the test runner, which would report it outside any test. In a
 * learner's real process each one ends the process (Node's default). Two ways checks provoke
 * one: a callback the learner wraps in an async function (an async pub/sub listener), whose
 * exception becomes a rejection; a connection dropped under a timer's command with no catch.
 */
export function hearUnhandledRejections(which: (reason: unknown) => boolean = () => true): {
  heard: unknown[];
  stop(): void;
} {
  const heard: unknown[] = [];
  const stop = divertProcessEvents(new Map([["unhandledRejection", heard]]), which);
  return { heard, stop };
}

/**
 * Until the returned stop(), a process event named in `into` whose first argument matches
 * `which` is recorded in that event's list instead of emitted.
 */
function divertProcessEvents(
  into: Map<string, unknown[]>,
  which: (reason: unknown) => boolean,
): () => void {
  // Test runners replace process.emit with their own: wrap whatever is there now.
  const previous = process.emit;
  process.emit = function (this: NodeJS.Process, event: string | symbol, ...args: unknown[]) {
    const heard = typeof event === "string" ? into.get(event) : undefined;
    if (heard && which(args[0])) {
      heard.push(args[0]);
      return true;
    }
    return (previous as (...a: unknown[]) => boolean).call(this, event, ...args);
  } as typeof process.emit;
  return () => {
    process.emit = previous;
  };
}

/**
 * Until stop(), an exception or a rejection nobody catches that matches `which` is recorded
 * instead of reaching the test runner, which would report it raw, outside any test. Either
 * way the learner's code let a callback's error escape where node-redis does not catch it: a
 * callback called later (setImmediate, setTimeout, a promise callback) throws from a turn of the
 * event loop of its own, and an async listener turns the throw into a rejected promise that
 * node-redis never awaits. In the learner's real process both end the process.
 */
export function hearEscapedErrors(which: (error: unknown) => boolean): {
  stop(): void;
  expectNone(callback: string, item: string, role: string, hint: number): void;
} {
  const uncaught: unknown[] = [];
  const unhandled: unknown[] = [];
  const stop = divertProcessEvents(
    new Map([
      ["uncaughtException", uncaught],
      ["unhandledRejection", unhandled],
    ]),
    which,
  );
  return {
    stop,
    expectNone: (callback, item, role, hint) => {
      check(
        uncaught.length === 0,
        `${thrower(uncaught[0], callback, item)}, and the exception reached the process as an uncaught exception: your code called ${callback}() outside the subscribe listener (in a setImmediate or a setTimeout), where node-redis does not catch it and nothing else does. Your ${role}'s process would have ended here. Call ${callback}() inside the listener, in a try/catch, or catch around the deferred call.`,
        hint,
      );
      check(
        unhandled.length === 0,
        `${thrower(unhandled[0], callback, item)}, and the exception became a rejected promise nobody handled: ${callback}() ran inside a promise (an async listener, or a .then() chain) and nothing awaits or catches it; node-redis calls your listener without looking at what it returns. Node ends a process on an unhandled rejection: your ${role} would have crashed here. Call ${callback}() from a plain listener function, in a try/catch, or catch around it inside the promise.`,
        hint,
      );
    },
  };
}

/**
 * Until stop(), hears the "error" events of connections the check cuts (dropConnection()) that
 * find no listener, or a listener that throws. A drop test cuts a subscriber's connection
 * twice: an error listener added with once() hears the first cut and is gone for the second.
 */
export function hearDropErrors(): {
  stop(): void;
  /** After cut number `cut` of `what` (e.g. "the dashboard's connection"): fails if one escaped. */
  expectHeard(cut: number, what: string, role: string, advice: string, hint: number): void;
} {
  const drops = hearUnheardErrors(
    (e) => e instanceof Error && /closed|reset|ECONN/i.test(e.message),
  );
  return {
    stop: drops.stop,
    expectHeard: (cut, what, role, advice, hint) => {
      check(
        drops.heard.length === 0,
        `The check cut ${what} (as a network failure or a Redis restart does), and node-redis reported it as an "error" event on that connection, which ${cut === 1 ? "had no error listener" : "no longer had an error listener: it heard the first drop and was gone (added with once())"}. Node ends a process on an "error" event nobody listens to: your ${role} would have crashed. ${advice}`,
        hint,
      );
      check(
        drops.rethrown.length === 0,
        `The check cut ${what}, node-redis reported it to your error listener, and the listener threw it again (${String(drops.rethrown[0])}). Nothing catches it there: your ${role}'s process would have crashed. Let the error listener log the error, never throw.`,
        hint,
      );
    },
  };
}

/**
 * Drops the connection under the first command `match` picks, before it reaches Redis (as a
 * restart or a failover does), so that command's promise rejects; runs `work`, which gets
 * whether the drop has happened and must end what it started (stop the worker) before it
 * returns; and gives the rejections nobody handled. Awaited, the rejection reaches the learner's
 * loop or caller; sent without await, nobody: in a real process Node ends it there.
 */
export async function dropUnder(
  match: (c: SentCommand) => boolean,
  work: (dropped: () => boolean) => Promise<void>,
): Promise<{ dropped: boolean; unhandled: unknown[] }> {
  const rejections = hearUnhandledRejections();
  let dropped = false;
  const drop = before(match, async (c) => {
    dropConnection(c.conn);
    dropped = true;
  });
  try {
    await work(() => dropped);
  } finally {
    drop.cancel();
    // The rejection came when the connection closed; one more turn of the event loop lets Node
    // report it if nobody handled it.
    await new Promise((resolve) => setImmediate(resolve));
    rejections.stop();
  }
  return { dropped, unhandled: rejections.heard };
}

/**
 * Records every connection `client.duplicate()` makes from now on, so that a drop test can tell
 * a learner's loop that ended (all its connections closed) from one still going, which reads
 * again after node-redis reconnected and so meets the next cut.
 */
export function recordDuplicates(client: {
  duplicate(...args: never[]): { isOpen: boolean };
}): () => boolean {
  const made: { isOpen: boolean }[] = [];
  const duplicate = client.duplicate.bind(client);
  client.duplicate = ((...args: never[]) => {
    const connection = duplicate(...args);
    made.push(connection);
    return connection;
  }) as typeof client.duplicate;
  return () => made.every((connection) => !connection.isOpen);
}
