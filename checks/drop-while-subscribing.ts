/**
 * A subscriber's connection that drops while its first SUBSCRIBE is on its way, as a network
 * failure can at any step. node-redis reports the drop as an "error" event on that connection
 * at once: an error listener added only once subscribe() has resolved is not there yet, and Node
 * ends a process on an "error" event nobody listens to. The start may then resolve (node-redis
 * subscribes again once it is back) or reject: either is the learner's to choose.
 */
import { check, settled, within } from "./kit.ts";
import { hearDropErrors } from "./unheard-errors.ts";
import { before, command, dropConnection, scope } from "./wire.ts";

export interface DropWhileSubscribing {
  /** The learner's function, e.g. "openDashboard()". */
  what: string;
  /** Who subscribes, e.g. "dashboard". */
  role: string;
  /** The channel its SUBSCRIBE (or PSUBSCRIBE) names. */
  channel: string;
  start: () => Promise<unknown>;
  /** Keeps what a start that resolved returned (its stop()), for the test's cleanup. */
  keep: (value: unknown) => void;
  hint: number;
}

export async function expectDropWhileSubscribingHeard(d: DropWhileSubscribing): Promise<void> {
  const drops = hearDropErrors();
  // SUBSCRIBE, or a PSUBSCRIBE that names the channel (where a lesson accepts one).
  const subscribes = [command("SUBSCRIBE", d.channel), command("PSUBSCRIBE", d.channel)];
  const cut = before(
    (c) => subscribes.some((match) => match(c)),
    (c) => dropConnection(c.conn),
  );
  try {
    const outcome = await settled(within(Promise.resolve().then(d.start), 5000, d.what));
    if ("value" in outcome) d.keep(outcome.value);
    check(cut.hasFired(), `${d.what} sent no SUBSCRIBE for its channel.`, d.hint);
    drops.expectHeard(
      1,
      `the ${d.role}'s connection while its SUBSCRIBE was on its way`,
      d.role,
      'Add subscriber.on("error", ...) right after duplicate(), before connect() and subscribe(): a connection can drop at any step, and a listener added once subscribe() has resolved (or once caught up) comes too late.',
      d.hint,
    );
  } finally {
    cut.cancel();
    drops.stop();
  }
}

/**
 * The same drop one step earlier: while the subscriber's connection says hello (the HELLO that
 * connect() sends before it resolves). node-redis reports that drop as an "error" event too, so
 * an error listener added once connect() has resolved, before subscribe(), is not there yet.
 * A connection that sends no HELLO (RESP2 with neither name nor password) is not judged here.
 */
export async function expectDropWhileConnectingHeard(
  d: Omit<DropWhileSubscribing, "channel">,
): Promise<void> {
  const drops = hearDropErrors();
  // Only a connection this start opens: an earlier subscriber that reconnects says hello too,
  // and its listener is long in place.
  const starting = scope("connecting");
  const cut = before(
    (c) => c.scope === starting.name && command("HELLO")(c),
    (c) => dropConnection(c.conn),
  );
  try {
    const outcome = await settled(
      within(
        starting.run(() => Promise.resolve().then(d.start)),
        5000,
        d.what,
      ),
    );
    if ("value" in outcome) d.keep(outcome.value);
    if (!cut.hasFired()) return;
    drops.expectHeard(
      1,
      `the ${d.role}'s connection while connect() was still saying hello (HELLO)`,
      d.role,
      'Add subscriber.on("error", ...) right after duplicate(), before connect(): a connection can drop while it connects too, and a listener added once connect() has resolved comes too late.',
      d.hint,
    );
  } finally {
    cut.cancel();
    drops.stop();
  }
}
