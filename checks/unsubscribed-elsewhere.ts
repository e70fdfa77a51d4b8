/**
 * A stop() that unsubscribes on a connection its subscriber never subscribed on (the client it
 * was given, most often): UNSUBSCRIBE without a listener drops every subscription that
 * connection has to the channel, the caller's own too. Found in the sent() trace by connection,
 * however the command was sent.
 */
import { type SentCommand, sent } from "./wire.ts";

const SUBSCRIBES = /^(P|S)?SUBSCRIBE$/;
const UNSUBSCRIBES = /^(P|S)?UNSUBSCRIBE$/;

/** The learner connections a (P/S)SUBSCRIBE went out on since `mark` (a sent().length). */
export function subscribedOn(mark: number): number[] {
  return sent()
    .slice(mark)
    .filter((c) => SUBSCRIBES.test(c.name))
    .map((c) => c.conn);
}

/** The unsubscribe commands sent since `mark` on a connection outside `conns`. */
export function unsubscribedElsewhere(mark: number, conns: number[]): SentCommand[] {
  return sent()
    .slice(mark)
    .filter((c) => UNSUBSCRIBES.test(c.name) && !conns.includes(c.conn));
}

/** "UNSUBSCRIBE ch1, PUNSUBSCRIBE p*": the commands as a learner reads them. */
export function describeUnsubscribes(commands: SentCommand[]): string {
  return commands.map((c) => [c.name, ...c.args.slice(1)].join(" ")).join(", ");
}
