/**
 * Everything a screen waits for arrives in one inbox: keys, file saves, finished checks,
 * terminal resizes. A screen takes the next event it cares about and leaves the others queued,
 * so a check that finishes while the pager is open is shown when the pager closes.
 */
import { emitKeypressEvents } from "node:readline";
import { exitCleanly, STOPPED_NOTE } from "./exit.ts";

export interface Key {
  /** "r", "space", "return", "escape", "up", ... */
  name: string;
  /** The character typed, for keys that have one. */
  char: string;
  ctrl: boolean;
}

export class Inbox<E> {
  private queue: E[] = [];
  private waiting: { accepts: (event: E) => boolean; resolve: (event: E) => void }[] = [];

  push(event: E): void {
    const index = this.waiting.findIndex((w) => w.accepts(event));
    const waiter = index >= 0 ? this.waiting.splice(index, 1)[0] : undefined;
    if (waiter) waiter.resolve(event);
    else this.queue.push(event);
  }

  /** The first queued event `accepts` takes, or the next one to arrive. */
  take<T extends E = E>(accepts: (event: E) => event is T): Promise<T>;
  take(accepts?: (event: E) => boolean): Promise<E>;
  take(accepts: (event: E) => boolean = () => true): Promise<E> {
    const index = this.queue.findIndex(accepts);
    if (index >= 0) return Promise.resolve(this.queue.splice(index, 1)[0] as E);
    return new Promise((resolve) => this.waiting.push({ accepts, resolve }));
  }

  /** Drops queued events `matches` selects (stale keys typed while a prompt was open). */
  drop(matches: (event: E) => boolean): void {
    this.queue = this.queue.filter((event) => !matches(event));
  }
}

interface KeypressInfo {
  name?: string;
  sequence?: string;
  ctrl?: boolean;
  meta?: boolean;
}

let interrupt: (() => boolean) | undefined;

/**
 * What Ctrl+C does before it quits: `handler` returns true when it dealt with it (cancelled a
 * running check), false to quit as usual. Undefined removes it.
 */
export function onInterrupt(handler: (() => boolean) | undefined): void {
  interrupt = handler;
}

/**
 * Reads single keys from the terminal in raw mode until stopped. Ctrl+C goes to the clean exit,
 * whatever the screen is doing, unless the interrupt handler takes it. Stop before handing the terminal to a prompt or an
 * editor, so they get every key.
 */
export function readKeys(onKey: (key: Key) => void): () => void {
  const stdin = process.stdin;
  emitKeypressEvents(stdin);
  const listener = (char: string | undefined, info: KeypressInfo = {}) => {
    if (info.ctrl && info.name === "c") {
      if (!interrupt?.()) void exitCleanly(130, STOPPED_NOTE);
      return;
    }
    const name = info.name ?? char ?? info.sequence ?? "";
    onKey({ name, char: char ?? "", ctrl: Boolean(info.ctrl) });
  };
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.on("keypress", listener);
  stdin.resume();
  return () => {
    stdin.off("keypress", listener);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
  };
}
