/**
 * A subscriber's connection that drops while its first SUBSCRIBE is on its way, as a network
 * failure can at any step. node-redis reports the drop as an "error" event on that connection
 * at once: an error listener added only once subscribe() has resolved is not there yet, and Node
 * ends a process on an "error" event nobody listens to. The start may then resolve (node-redis
 * subscribes again once it is back) or reject: either is the learner's to choose.
 */
import { check, settled, within } from "./kit.ts";
import { hearDropErrors } from "./unheard-errors.ts";
import { before, command, dropConnection, type SentCommand, scope } from "./wire.ts";

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
  // SUBSCRIBE, or a PSUBSCRIBE that names the channel (where a lesson accepts one).
  const subscribes = [command("SUBSCRIBE", d.channel), command("PSUBSCRIBE", d.channel)];
  await expectDropHeard(d, {
    at: (c) => subscribes.some((match) => match(c)),
    noCut: `${d.what} sent no SUBSCRIBE for its channel.`,
    moment: `the ${d.role}'s connection while its SUBSCRIBE was on its way`,
    advice:
      'Add subscriber.on("error", ...) right after duplicate(), before connect() and subscribe(): a connection can drop at any step, and a listener added once subscribe() has resolved (or once caught up) comes too late.',
  });
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
  // Only a connection this start opens: an earlier subscriber that reconnects says hello too,
  // and its listener is long in place.
  const starting = scope("connecting");
  await expectDropHeard(
    { ...d, start: () => starting.run(d.start) },
    {
      at: (c) => c.scope === starting.name && command("HELLO")(c),
      moment: `the ${d.role}'s connection while connect() was still saying hello (HELLO)`,
      advice:
        'Add subscriber.on("error", ...) right after duplicate(), before connect(): a connection can drop while it connects too, and a listener added once connect() has resolved comes too late.',
    },
  );
}

/**
 * Starts the subscriber with its connection cut before the command `at` matches, and expects
 * the drop heard by an error listener. `noCut`: the failure when nothing matched (without it,
 * a start that sent no such command is not judged).
 */
async function expectDropHeard(
  d: Omit<DropWhileSubscribing, "channel">,
  cutAt: { at: (c: SentCommand) => boolean; noCut?: string; moment: string; advice: string },
): Promise<void> {
  const drops = hearDropErrors();
  const cut = before(cutAt.at, (c) => dropConnection(c.conn));
  try {
    const outcome = await settled(within(Promise.resolve().then(d.start), 5000, d.what));
    if ("value" in outcome) d.keep(outcome.value);
    if (cutAt.noCut !== undefined) check(cut.hasFired(), cutAt.noCut, d.hint);
    else if (!cut.hasFired()) return;
    drops.expectHeard(1, cutAt.moment, d.role, cutAt.advice, d.hint);
  } finally {
    cut.cancel();
    drops.stop();
  }
}
