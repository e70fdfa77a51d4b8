/**
 * "error" events that nobody listens to. Node throws such an event as an exception, and in a
 * learner's real process that ends the process; inside a check it would surface only as an
 * unhandled error outside any test, while every test reports success. Hearing it here lets a
 * check fail the test that provoked it, with the cause.
 */
import { EventEmitter } from "node:events";

/**
 * Until stop(), an "error" event that matches `which` and finds no listener is recorded in
 * `heard` instead of thrown.
 */
export function hearUnheardErrors(which: (error: unknown) => boolean): {
  heard: unknown[];
  stop(): void;
} {
  const heard: unknown[] = [];
  const previous = EventEmitter.prototype.emit;
  EventEmitter.prototype.emit = function (
    this: EventEmitter,
    event: string | symbol,
    ...args: unknown[]
  ) {
    if (event === "error" && this.listenerCount("error") === 0 && which(args[0])) {
      heard.push(args[0]);
      return false;
    }
    return previous.call(this, event, ...args);
  };
  return {
    heard,
    stop: () => {
      EventEmitter.prototype.emit = previous;
    },
  };
}
