import net from "node:net";
import { pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, beforeEach, describe, test } from "vitest";
import {
  call,
  check,
  ctx,
  eventually,
  fail,
  fresh,
  learnerConnections,
  loadExercise,
  type Redis,
  settled,
  sleep,
  until,
  within,
} from "../kit.ts";
import { expectRefusedLoginFails, loginRefusalLogged } from "../refused-login.ts";
import { expectRefusedStartCleanedUp } from "../refused-subscribe.ts";
import {
  hearDropErrors,
  hearEscapedErrors,
  hearUnhandledRejections,
  hearUnheardErrors,
} from "../unheard-errors.ts";
import {
  allLearnerAddrs,
  checkOwnsSocket,
  deliverTogether,
  dialledSince,
  dropConnection,
  learnerAddrs,
  nothingInFlight,
  openedSince,
  type SentCommand,
  scope,
  scopeTimers,
  sent,
} from "../wire.ts";
import { explainConnectError } from "./explain.ts";
import { type Fixture, type StageConnection, startFixture, startImpostor } from "./fixture.ts";
import { checkLeastPrivilege } from "./least-privilege.ts";

interface StageNames {
  input: string;
  group: string;
  consumer: string;
  output: string;
  status: string;
}
interface Stoppable {
  stop(): Promise<void>;
}
interface Exercise {
  stageClient(conn: StageConnection): Redis | Promise<Redis>;
  stageAcl(names: StageNames): string[];
  startStage(
    conn: StageConnection,
    names: StageNames,
    handle: (doc: string) => Promise<void>,
    blockMs: number,
  ): Promise<Stoppable>;
  watchStatus(
    conn: StageConnection,
    channel: string,
    onEvent: (event: unknown) => void,
  ): Promise<Stoppable>;
}

const exercise = await loadExercise<Exercise>(
  "stageClient",
  "stageAcl",
  "startStage",
  "watchStatus",
);

const BLOCK_MS = 300;

let fixture: Fixture;
const cleanup: (() => Promise<unknown>)[] = [];

// lesson.json says needsPrivateServer: the harness never runs this file against a REDIS_URL.
let unavailable: string | undefined;
beforeAll(async () => {
  if (!ctx.privateServer) return;
  // Without openssl (or with a redis-server built without TLS) there is nothing to check
  // against: every test says why instead of failing on an undefined fixture.
  fixture = await startFixture().catch((error: Error) => {
    unavailable = error.message;
    return undefined as unknown as Fixture;
  });
}, 20_000);
beforeEach(() => {
  if (unavailable) fail(`The check's own TLS redis-server did not start: ${unavailable}`);
});
afterAll(async () => {
  await fixture?.stop();
});
afterEach(async () => {
  for (const undo of cleanup.splice(0).reverse()) {
    await Promise.race([undo(), sleep(2000)]).catch(() => {});
  }
});

function names(): StageNames {
  return {
    input: `${fresh("ocr")}:tasks`,
    group: fresh("ocr"),
    consumer: fresh("ocr-1"),
    output: `${fresh("ner")}:tasks`,
    status: fresh("status"),
  };
}

/** The learner's client for `conn`, connected; a failure to connect is explained by its cause. */
async function connectStage(conn: StageConnection, what: string): Promise<Redis> {
  const client = await call("stageClient()", () => exercise.stageClient(conn));
  check(
    client && typeof client.connect === "function",
    "stageClient() must return the client from createClient(), not connected yet.",
  );
  cleanup.push(async () => client.destroy());
  const failed = new Promise<Error>((resolve) => client.on("error", resolve));
  const connected = client.connect().then(() => undefined);
  connected.catch(() => {});
  const outcome = await within(Promise.race([connected, failed]), 5000, `${what} to connect`);
  if (outcome instanceof Error) {
    client.destroy();
    fail(explainConnectError(outcome, client, fixture.servername));
  }
  return client;
}

/**
 * Makes the timers `own` counts fire (a token refresh of the learner's, whatever its period)
 * until conn.password() has been asked again (`asked()` grew) or, twice in a row, none was left
 * to fire (a refresh that was under way sets its next timer once it has its token); a whole
 * turn of the event loop after each, so what it was given is stored by then.
 */
async function refreshNow(own: ReturnType<typeof scopeTimers>, asked: () => number) {
  const from = asked();
  let idle = 0;
  for (let round = 0; round < 10 && asked() === from && idle < 2; round++) {
    const fired = await own.fire();
    await new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
    idle = fired.length === 0 ? idle + 1 : 0;
  }
}

/** Whether `event` is the status of `doc`: fields a worker adds (a time, its name) are its own. */
function reports(event: unknown, doc: string): boolean {
  const e = event as { doc?: unknown; state?: unknown } | null;
  return typeof e === "object" && e !== null && e.doc === doc && e.state === "done";
}

/** A dashboard's account: it may subscribe to the stage's status channel, nothing else. */
function dashboardUser(stage: StageNames) {
  return fixture.user("dashboard", [`&${stage.status}`, "+subscribe", "+unsubscribe", "+ping"]);
}

const THROWN = "onEvent() threw on purpose (the check's simulated dashboard failure).";
const isThrown = (e: unknown) => e instanceof Error && e.message === THROWN;

/**
 * A watcher whose onEvent keeps every event in `events` and throws for the first, as a
 * dashboard's screen can: the watcher must outlive it.
 */
async function failingWatcher(
  conn: StageConnection,
  channel: string,
  events: unknown[],
): Promise<Stoppable> {
  const watcher = await call(
    "watchStatus()",
    () =>
      exercise.watchStatus(conn, channel, (event) => {
        events.push(event);
        if (events.length === 1) throw new Error(THROWN);
      }),
    5000,
  );
  cleanup.push(() => watcher.stop());
  return watcher;
}

/** A status event as the worker publishes it. */
function statusOf(doc: string): string {
  return JSON.stringify({ doc, state: "done" });
}

/** How many failed attempts the reconnect strategy of a client that was ready is asked about. */
const RETRIES_ASKED = 100;

/**
 * The bounds of the delay a reconnect strategy answers after many failed attempts: at most half
 * a minute (a worker must be back soon after Redis), at least 100 ms (not a storm of attempts).
 */
const MAX_RECONNECT_MS = 30_000;
const MIN_RECONNECT_MS = 100;

/**
 * After the first WARM_UP answers (a strategy that counts its own calls has grown by then), the
 * strategy is asked JITTER_ASKED more times, and each answer must keep to both bounds: a pure
 * function, so hundreds of calls cost nothing, and a jitter below the floor one time in thirty
 * (p = 0.03) slips through all of them with a chance of 0.97^600, about 1e-8, even where
 * Math.random() is not the source of its randomness.
 */
const WARM_UP = 20;
const JITTER_ASKED = 600;

/** Math.random()'s lowest and highest values. */
const RANDOM_LOWEST = 0;
const RANDOM_HIGHEST = 1 - 2 ** -53;
/** What Math.random() gives while the strategy is asked, in turn (undefined: its own value). */
const RANDOM_IN_TURN = [RANDOM_LOWEST, RANDOM_HIGHEST, undefined];

/**
 * What a reconnect strategy answers, with Math.random() giving `random` for the call (its own
 * value when undefined); an Error it throws is its answer too.
 */
function askStrategy(
  strategy: (retries: number, cause: Error) => unknown,
  retries: number,
  cause: Error,
  random: number | undefined,
): unknown {
  const own = Math.random;
  if (random !== undefined) Math.random = () => random;
  try {
    return strategy(retries, cause);
  } catch (error) {
    return error;
  } finally {
    Math.random = own;
  }
}

/** The largest COUNT a worker's read may ask for: more is a backlog taken in one reply. */
const MAX_COUNT = 1000;

describe.skipIf(!ctx.privateServer)("lesson 14", () => {
  test("stageClient() connects over TLS as the stage user, checking the certificate", async () => {
    const user = await fixture.user("ocr-worker", ["+ping", "+acl|whoami"]);
    const before = allLearnerAddrs();
    const client = await connectStage(user.conn, "the client from stageClient()");
    // Here every address is this machine, so a client that connects to node-redis's default
    // (localhost) reaches the server all the same: what it was asked to dial tells.
    const elsewhere = dialledSince(before).find(({ host }) => host !== user.conn.host);
    check(
      elsewhere === undefined,
      `Your client connected to ${elsewhere?.host === "localhost" ? "localhost (node-redis's default, when socket.host is not given)" : `"${elsewhere?.host}"`}, not to conn.host ("${user.conn.host}"). The check's server runs on this machine, so it answered all the same; on Azure conn.host is <name>.redis.cache.windows.net, and your worker would look for Redis on its own machine. Pass socket: { host: conn.host, port: conn.port, ... } (or url: \`rediss://\${conn.host}:\${conn.port}\`).`,
      2,
    );
    const whoami = await call("ACL WHOAMI on your client", () =>
      client.sendCommand(["ACL", "WHOAMI"]),
    );
    check(
      String(whoami) === user.conn.username,
      `Your client is connected as "${String(whoami)}", not as the user conn.username ("${user.conn.username}"): let the credentials provider return conn.username with the password.`,
      2,
    );
    check(
      user.calls() > 0,
      "Your client logged in without calling conn.password(): the password changes, so ask it for the current one on every connection.",
      2,
    );
    // Every caller connects what it gets: a worker and its watcher for one user, or a second
    // worker, each need a client of their own.
    const second = await call("stageClient() a second time", () => exercise.stageClient(user.conn));
    cleanup.push(async () => {
      if (second !== client && second?.isOpen) second.destroy();
    });
    check(
      second !== client && second?.isOpen === false,
      `stageClient() called again for the same user, while the first client was connected, returned ${second === client ? "that same client" : "a client that is already connected"}: the caller's connect() then fails ("Socket already opened"), and two workers, or a worker and its subscriber, would share one connection. Return a new client from createClient() on every call, not connected yet.`,
      2,
    );
  });

  test("stageClient() refuses a server whose certificate comes from another CA or names another host", async () => {
    const user = await fixture.user("ocr-worker", ["+ping"]);
    const impostors = [
      {
        wrongName: false,
        refused:
          "Your client completed a TLS handshake with a server whose certificate was signed by another CA: certificate verification is off. Anyone between your worker and Azure could read the documents and the password. Remove rejectUnauthorized: false; trust the right CA with ca: conn.ca instead.",
      },
      {
        wrongName: true,
        refused: `Your client completed a TLS handshake with a server whose certificate the right CA issued for another host, not for "${fixture.servername}": the host name is not checked. Any other server with a certificate from that CA could pose as yours. Remove checkServerIdentity (or make it return the error tls.checkServerIdentity returns) and pass servername: conn.servername.`,
      },
    ];
    for (const { wrongName, refused } of impostors) {
      const impostor = await startImpostor(fixture.server, fixture.servername, { wrongName });
      cleanup.push(impostor.close);
      const client = await call("stageClient()", () =>
        exercise.stageClient({ ...user.conn, port: impostor.port }),
      );
      cleanup.push(async () => client.destroy());
      const errors: Error[] = [];
      client.on("error", (error: Error) => errors.push(error));
      client.connect().catch(() => {});
      await until(() => impostor.handshakes() > 0 || errors.length > 0, 3000);
      client.destroy();
      check(impostor.handshakes() === 0, refused, 2);
    }
  });

  test("stageAcl() lets the stage worker do its work and nothing else", async () => {
    const stage = names();
    const rules = await call("stageAcl()", () => exercise.stageAcl(stage));
    check(
      Array.isArray(rules) && rules.every((rule) => typeof rule === "string"),
      `stageAcl() must return the ACL rules as an array of strings; it returned ${JSON.stringify(rules)}.`,
      3,
    );
    await checkLeastPrivilege(fixture, stage, rules);
  });

  test("startStage() and watchStatus() fail within seconds when Redis refuses the login", async () => {
    const stage = names();
    const user = await fixture.user("ocr-worker", ["~*", "&*", "+@all"]);
    // The right user with a wrong secret: what a deployment with a stale or mistyped one does.
    const secret = fresh("not-the-password");
    const wrong: StageConnection = { ...user.conn, password: async () => secret };
    // A client of the process has been ready before, as in any service that has been up a
    // while: a "never ready" flag kept at module level is then already true.
    await settled(
      within(
        (async () => {
          const ready = await exercise.stageClient(user.conn);
          ready.on("error", () => {});
          await ready.connect();
          await ready.close();
        })(),
        5000,
        "stageClient() with the right password",
      ),
    );
    const starts: [string, () => Promise<Stoppable>][] = [
      ["startStage()", () => exercise.startStage(wrong, stage, async () => {}, BLOCK_MS)],
      ["watchStatus()", () => exercise.watchStatus(wrong, stage.status, () => {})],
    ];
    // Whether stageClient()'s strategy gives up on a refused login in a fresh copy of the
    // module but not in this one: a "never ready" flag at module level, set by earlier clients.
    const givesUp = async (module: Pick<Exercise, "stageClient">) => {
      const client = await module.stageClient(wrong);
      const socket = client.options?.socket as { reconnectStrategy?: unknown } | undefined;
      const strategy = socket?.reconnectStrategy;
      const refusal = new Error("WRONGPASS invalid username-password pair or user is disabled.");
      return typeof strategy === "function" && strategy(0, refusal) instanceof Error;
    };
    const flagKeptAcrossClients = async () => {
      const copy = (await import(`${pathToFileURL(ctx.target).href}?never-ready`)) as Exercise;
      return (await givesUp(copy)) && !(await givesUp(exercise));
    };
    for (const [what, start] of starts) {
      await expectRefusedLoginFails({
        what,
        start,
        keep: (started) => cleanup.push(async () => (started as Stoppable | undefined)?.stop()),
        abandon: (crash) => cleanup.push(async () => crash()),
        password: secret,
        hint: 2,
        flagKeptAcrossClients,
      });
    }
  });

  test("startStage() comes up when its first connection is cut before the login", async () => {
    const stage = names();
    await fixture.admin.xGroupCreate(stage.input, stage.group, "0", { MKSTREAM: true });
    const user = await fixture.user("ocr-worker", ["~*", "&*", "+@all"]);
    // Between the worker and Redis, a hop that cuts the first connection as soon as it opens
    // (Redis still starting, a failover under way, a load balancer's blip) and passes the
    // rest through untouched: TLS and the login go end to end.
    let cut = 0;
    const legs = new Set<net.Socket>();
    const hop = net.createServer((socket) => {
      legs.add(socket);
      socket.on("error", () => {});
      if (cut++ === 0) {
        socket.destroy();
        return;
      }
      const redis = net.connect(user.conn.port, "127.0.0.1");
      checkOwnsSocket(redis);
      legs.add(redis);
      redis.on("error", () => socket.destroy());
      socket.on("close", () => redis.destroy());
      redis.on("close", () => socket.destroy());
      socket.pipe(redis).pipe(socket);
    });
    await new Promise<void>((resolve) => hop.listen(0, "127.0.0.1", resolve));
    cleanup.push(
      () =>
        new Promise<void>((resolve) => {
          for (const leg of legs) leg.destroy();
          hop.close(() => resolve());
        }),
    );
    const address = hop.address();
    const port = typeof address === "object" && address ? address.port : 0;
    const started = await within(
      settled(exercise.startStage({ ...user.conn, port }, stage, async () => {}, BLOCK_MS)),
      10_000,
      "startStage() with its first connection cut",
    );
    if ("value" in started) cleanup.push(async () => started.value.stop());
    check(
      "value" in started,
      `The first connection of startStage() was cut before the login (as a Redis still starting or a failover does), and startStage() rejected: ${"error" in started ? String(started.error) : ""}. Your reconnect strategy gave up on an error that is not a refused login. Before the first ready, give up only on WRONGPASS or NOAUTH (the secret is wrong, and retrying cannot mend it); a dropped or refused connection is Redis's trouble of the moment, so retry it after a delay, as node-redis does by default.`,
      2,
    );
  });

  test("stageClient()'s client keeps retrying a refused login once it has been ready", async () => {
    const user = await fixture.user("ocr-worker", ["+ping"]);
    // A token that expired under a running worker: its next logins are refused until the new
    // one is in place. The check tests stageClient()'s own client, the one whose "ready" it hears.
    let stale: string | undefined;
    let staleAsked = 0;
    const conn: StageConnection = {
      ...user.conn,
      password: async () => {
        if (stale !== undefined) staleAsked++;
        return stale ?? (await user.conn.password());
      },
    };
    // The timers your own code starts (a token refresh in the background, say) are counted.
    const stageScope = scope("stage");
    const ownTimers = scopeTimers(stageScope, { createdIn: ctx.target });
    cleanup.push(async () => ownTimers.stop());
    const client = await stageScope.run(() => connectStage(conn, "the client from stageClient()"));
    stale = fresh("expired-token");
    // A refresh of your own in the background has its turn now, whatever its period, and reads
    // the expired token before the connection drops: the next login is refused on every run,
    // not only when the refresh happened to come between this step and the next.
    await refreshNow(ownTimers, () => staleAsked);
    await fixture.admin.sendCommand(["CLIENT", "KILL", "USER", conn.username]);
    const refused = await loginRefusalLogged(fixture.admin, conn.username);
    // A rotation or a failover can take a while: the expired token stays for four attempts (a
    // client that gives up after a few retries, whatever the cause, is closed by then).
    const outlasted = refused && (await until(() => staleAsked >= 4 || !client.isOpen, 8000));
    stale = undefined;
    // A client that gave up is closed for good: no need to wait the 6 s out.
    const back =
      refused && (await until(() => client.isReady || !client.isOpen, 6000)) && client.isReady;
    // Back without a refused login: it logged in with a password it kept, not conn.password()'s.
    const kept = !refused && client.isReady;
    check(
      back,
      kept
        ? `Once connected, your stageClient()'s client logged in again after a dropped connection without the expired token conn.password() gave meanwhile: it used a password it had kept (a cache of your own?). After a real rotation a kept password is the one refused. Let the credentials provider call conn.password() each time a connection is made, and keep nothing.`
        : `Once connected, your stageClient()'s client ${!refused ? "did not try to log in again within 6 s of a dropped connection" : outlasted && staleAsked > 1 && staleAsked < 4 ? `gave up after ${staleAsked} refused logins and closed: a rotation or a failover can take longer than a few retries, so never give up on a client that has been ready, however many retries it took` : "did not come back within 6 s after conn.password() gave a valid password again"}: the check dropped its connection while conn.password() gave an expired token (as a rotation under way does), then gave the valid one again. A client that gives up on a refused login after it has been ready stays dead until someone restarts the worker. Give up on WRONGPASS or NOAUTH only before the client's first "ready"; after it, keep answering a delay.`,
      2,
    );
    // A longer outage than the check can wait out: ask the strategy itself, as node-redis would
    // after many failed attempts (a failover or a rotation can take minutes).
    const strategy = (client.options?.socket as { reconnectStrategy?: unknown } | undefined)
      ?.reconnectStrategy;
    if (typeof strategy === "function") {
      for (const cause of [
        new Error("Socket closed unexpectedly"),
        new Error("WRONGPASS invalid username-password pair or user is disabled."),
      ]) {
        // Asked again for the next attempts too: a strategy that counts its own calls instead
        // of reading `retries` has grown after the first WARM_UP answers, and from then on
        // every answer must keep to the floor and the cap. Math.random() is made to give its
        // lowest and highest values in turn (and its own in between), so a jitter that can go
        // below the floor does on every run, not in one run of thirty.
        const ask = strategy as (retries: number, cause: Error) => unknown;
        for (
          let retries = RETRIES_ASKED;
          retries < RETRIES_ASKED + WARM_UP + JITTER_ASKED;
          retries++
        ) {
          const random = RANDOM_IN_TURN[retries % RANDOM_IN_TURN.length];
          const answer = askStrategy(ask, retries, cause, random);
          check(
            typeof answer === "number",
            `Once connected, your stageClient()'s reconnect strategy, asked after ${retries} failed attempts with the cause "${cause.message}", answered ${answer instanceof Error ? `an Error ("${answer.message}")` : JSON.stringify(answer)} instead of a delay: the client would give up and stay closed after an outage of a few minutes (a failover, a rotation under way), until someone restarts the worker. After the first "ready", answer a delay (capped, say at 2 s), however many retries it took.`,
            2,
          );
          const tooLong = !(answer <= MAX_RECONNECT_MS);
          const tooShort = retries >= RETRIES_ASKED + WARM_UP && !(answer >= MIN_RECONNECT_MS);
          if (!tooLong && !tooShort) continue;
          // Only now, so as not to call a strategy that counts its calls more than node-redis
          // would: does its answer hang on Math.random()?
          const jitter =
            random !== undefined &&
            askStrategy(ask, retries, cause, RANDOM_LOWEST) !==
              askStrategy(ask, retries, cause, RANDOM_HIGHEST);
          const withRandom = jitter
            ? ` (with Math.random() giving ${random === RANDOM_LOWEST ? "0" : "just under 1"})`
            : "";
          check(
            !tooLong,
            `Once connected, your stageClient()'s reconnect strategy, asked after ${retries} failed attempts with the cause "${cause.message}", answered a delay of ${answer} ms (${Math.round(answer / 60_000)} min)${withRandom}: after an outage of a few minutes (a failover, a rotation under way) your worker would stay away that long after Redis is back, while the work piles up. Cap the delay at a few seconds: Math.min(2 ** retries * 50, 2000).${jitter ? ` A jitter must keep to the cap too: ${MIN_RECONNECT_MS} + Math.random() * (cap - ${MIN_RECONNECT_MS}).` : ""}`,
            2,
          );
          fail(
            `Once connected, your stageClient()'s reconnect strategy, asked after ${retries} failed attempts with the cause "${cause.message}", answered a delay of ${answer} ms${withRandom}: while Redis is down (a failover can take a minute) every worker would try again ${Math.round(1000 / Math.max(answer, 1))} times a second, a TLS handshake and a login each, a storm that a server coming back has to weather. Let the delay grow as the failures go on, to a second or two: Math.min(2 ** retries * 50, 2000).${jitter ? ` A jitter must not take the delay below ${MIN_RECONNECT_MS} ms either ("full jitter", Math.random() * cap, can give 0): add it on top of a floor, ${MIN_RECONNECT_MS} + Math.random() * (cap - ${MIN_RECONNECT_MS}).` : ""}`,
            2,
          );
        }
      }
    }
  });

  test("watchStatus() loses no status that arrived with one whose onEvent threw", async () => {
    const stage = names();
    const dashboard = await dashboardUser(stage);
    // A message that is not JSON goes first: JSON.parse throws on it as onEvent can.
    const typedByHand = "not json: typed into redis-cli while debugging";
    let parseThrew = false;
    const ours = (e: unknown) => {
      if (e instanceof SyntaxError) parseThrew = true;
      return isThrown(e) || e instanceof SyntaxError;
    };
    const unheard = hearUnheardErrors(ours);
    const escaped = hearEscapedErrors(ours);
    const events: unknown[] = [];
    const docs = [fresh("doc"), fresh("doc"), fresh("doc")];
    try {
      const before = allLearnerAddrs();
      await failingWatcher(dashboard.conn, stage.status, events);
      // A burst reaches a subscriber's socket together, and node-redis 6.3 drops the rest of a
      // read when a message listener throws: the check makes the four share one read.
      await deliverTogether(openedSince(before), [typedByHand, ...docs], async () => {
        await fixture.admin.publish(stage.status, typedByHand);
        for (const doc of docs) await fixture.admin.publish(stage.status, statusOf(doc));
      });
      await until(() => events.length >= docs.length, 2000);
      // The "error" event is emitted in the same turn as the throw, a rejection nobody handles
      // once that turn's promises have run: after this pause each was heard or not.
      await sleep(10);
    } finally {
      unheard.stop();
      escaped.stop();
    }
    const first = docs[0] as string;
    escaped.expectNone("onEvent", first, "status watcher", 2);
    unheard.expectNone("onEvent", first, "status watcher", 2);
    const heard = docs.filter((doc) => events.some((event) => reports(event, doc)));
    if (events.length === 0 && parseThrew) {
      fail(
        `A message that is not JSON ("${typedByHand}", as someone debugging publishes by hand) reached the watcher's connection in one read with three status events, and none of the three reached onEvent: JSON.parse threw on it in your listener, and node-redis 6.3 drops the rest of a read when a message listener throws. Parse inside the try as well: try { onEvent(JSON.parse(message)) } catch (error) { log it }.`,
        2,
      );
    }
    if (events.length === 1) {
      fail(
        `Three status events reached the watcher's connection together, as a burst does. onEvent threw for the first (the check made it fail, as a dashboard can), and the ${docs.length - 1} after it never reached onEvent: node-redis 6.3 drops the rest of a read when a message listener throws. An error listener hears the exception, but the events are gone. Catch around onEvent inside your listener (try { onEvent(JSON.parse(message)) } catch (error) { log it }), so one failing dashboard costs only its own event.`,
        2,
      );
    }
    check(
      heard.length === docs.length,
      `The check published ${docs.length} status events after watchStatus() returned; onEvent was called for ${heard.length} of them (${JSON.stringify(events)}). watchStatus() must subscribe before it returns, and call onEvent with each parsed event, also after onEvent threw for the first.`,
      2,
    );
    // Called again for the event it threw on, and once for the others: a retry in the listener
    // (a second listener would hear every event twice).
    const times = (doc: string) => events.filter((event) => reports(event, doc)).length;
    const again = times(first);
    check(
      again <= 1 || docs.slice(1).some((doc) => times(doc) > 1),
      `onEvent threw for the status of ${first} (the check made it fail, as a dashboard can), and your watcher called onEvent with it ${again} times: it tried again after the exception. A dashboard that failed to show an event may have half-shown it, and one that fails on it every time is called again and again: call onEvent once with each event, catch its exception, log it and go on.`,
      2,
    );
    const later = fresh("doc");
    await fixture.admin.publish(stage.status, statusOf(later));
    await eventually(
      () => events.some((event) => reports(event, later)),
      3000,
      "After onEvent threw once, the watcher received nothing published later. One failing dashboard must not end the subscription.",
      2,
    );
  });

  test("a watcher whose connection drops says so, subscribes again and keeps receiving", async () => {
    const stage = names();
    const dashboard = await dashboardUser(stage);
    const events: unknown[] = [];
    const before = allLearnerAddrs();
    const watcher = await call(
      "watchStatus()",
      () => exercise.watchStatus(dashboard.conn, stage.status, (event) => events.push(event)),
      5000,
    );
    cleanup.push(() => watcher.stop());
    // Twice: an error listener added with once() hears the first drop and is gone.
    const drops = hearDropErrors();
    try {
      for (let n = 1; n <= 2; n++) {
        const known = new Set(openedSince(before));
        for (const addr of learnerAddrs()) if (known.has(addr)) dropConnection(addr);
        const doc = fresh("doc");
        // node-redis reconnects and subscribes again by itself; until then a PUBLISH reaches no one.
        const back = await until(
          async () => (await fixture.admin.publish(stage.status, statusOf(doc))) > 0,
          3000,
        );
        drops.expectHeard(
          n,
          "the watcher's connection",
          "watcher",
          'Listen with subscriber.on("error", ...) on the watcher\'s client.',
          2,
        );
        if (!back) {
          const tried = openedSince(before).length > known.size;
          fail(
            `After the check cut the watcher's connection (drop ${n}), nobody was subscribed to ${stage.status} for 3 s: ${
              tried
                ? "the watcher connected again but did not subscribe. Keep the client open: node-redis subscribes again by itself after a reconnect."
                : "the watcher did not even try to connect again. node-redis reconnects by itself unless told not to: keep the client open, and let a reconnectStrategy give up only on an authentication error before the first ready, never on a dropped connection."
            }`,
            2,
          );
        }
        await eventually(
          () => events.some((event) => reports(event, doc)),
          2000,
          `After the watcher subscribed again (drop ${n}), onEvent was not called for the status of ${doc}.`,
          2,
        );
      }
    } finally {
      drops.stop();
    }
  });

  test("the worker and the status watcher keep working across password rotations", async () => {
    const stage = names();
    await fixture.admin.xGroupCreate(stage.input, stage.group, "0", { MKSTREAM: true });
    const rules = await call("stageAcl()", () => exercise.stageAcl(stage));
    const worker = await fixture.user("ocr-worker", rules);
    const dashboard = await dashboardUser(stage);
    const events: unknown[] = [];
    const unheard = hearUnheardErrors(isThrown);
    const rejections = hearUnhandledRejections(isThrown);
    cleanup.push(async () => {
      unheard.stop();
      rejections.stop();
    });
    // The worker and the watcher run in a scope of their own, so the timers they leave behind
    // after stop() (a token refresh on setInterval, say) can be counted.
    const stageScope = scope("stage");
    const stageTimers = scopeTimers(stageScope, { repeating: true });
    cleanup.push(async () => stageTimers.stop());
    // And the timers that keep the process alive: a refresh on a setTimeout() chain re-arms
    // itself however long its period (node-redis's own connect timeouts are unref()'d).
    const heldTimers = scopeTimers(stageScope, { referenced: true });
    cleanup.push(async () => heldTimers.stop());
    // And the timers your own code started, unref()'d or not: an unref()'d refresh lets the
    // process exit, but in a process that goes on it keeps asking for tokens for ever.
    const ownTimers = scopeTimers(stageScope, { createdIn: ctx.target });
    cleanup.push(async () => ownTimers.stop());
    const watcher = await stageScope.run(() =>
      failingWatcher(dashboard.conn, stage.status, events),
    );
    const handled: string[] = [];
    const running = await call(
      "startStage()",
      () =>
        stageScope.run(() =>
          exercise.startStage(
            worker.conn,
            stage,
            async (doc) => {
              handled.push(doc);
            },
            BLOCK_MS,
          ),
        ),
      5000,
    );
    cleanup.push(() => running.stop());

    for (const round of [0, 1, 2]) {
      const before = { worker: worker.calls(), dashboard: dashboard.calls() };
      if (round > 0) {
        await worker.rotate();
        await dashboard.rotate();
      }
      const rotated =
        round > 0 ? " after the password rotated (ACL SETUSER, CLIENT KILL USER)" : "";
      await eventually(
        async () => Number((await fixture.admin.pubSubNumSub(stage.status))[stage.status]) > 0,
        4000,
        `The status watcher was not subscribed to the status channel${rotated}. ${
          round === 0
            ? "watchStatus() must subscribe before it returns."
            : dashboard.calls() === before.dashboard
              ? "Its connection never asked conn.password() again: either it keeps the first password (every reconnect is refused) or it does not reconnect at all (reconnectStrategy: false or one that gives up on a dropped connection, or no 'error' listener). Build the subscriber with stageClient(), whose credentials provider asks on every reconnect, and keep node-redis's reconnects on."
              : "Its connection asked for the new password but did not subscribe again: keep the client open (node-redis subscribes again after a reconnect)."
        }`,
        2,
      );
      const doc = fresh("doc");
      await fixture.admin.xAdd(stage.input, "*", { doc });
      const outputHas = async () =>
        ((await fixture.admin.xRange(stage.output, "-", "+")) ?? []).some(
          (e) => e?.message.doc === doc,
        );
      if (!(await until(outputHas, 5000))) {
        const asked = worker.calls() - before.worker;
        fail(
          `The worker did not pass document ${doc} on to the output stream within 5 s${rotated}. ${
            round === 0
              ? "startStage() must read the input through the group, call handle(), then XADD { doc } to the output and XACK."
              : asked === 0
                ? "Its connections never asked conn.password() again after the rotation: the password was read once, so every reconnect is refused, or its client has no 'error' listener (then the disconnect is thrown as an error and node-redis never reconnects), or its reconnectStrategy gave up on the dropped connection (give up only on a login refused before the first ready). Use a credentialsProvider whose credentials() calls conn.password(), and give the client client.on(\"error\", ...)."
                : `Its client asked conn.password() ${asked} time(s) since the rotation, but the worker did not go on: a blocked XREADGROUP fails when its connection is killed, and the loop must catch that and read again.`
          }`,
          round === 0 ? 4 : asked === 0 ? 2 : 4,
        );
      }
      check(handled.includes(doc), `${doc} reached the output without handle() being called.`, 4);
      await eventually(
        () => events.some((event) => reports(event, doc)),
        3000,
        `The status watcher did not report { doc: "${doc}", state: "done" }${rotated}; it got ${JSON.stringify(events.slice(-3))}. The worker publishes it on the status channel after the XADD.`,
        4,
      );
      // One message reaches every listener of the channel at once: duplicates are here by now.
      const heard = events.filter((event) => reports(event, doc)).length;
      const published = sent(
        (c) =>
          c.name === "PUBLISH" && c.args[1] === stage.status && c.args[2]?.includes(doc) === true,
      ).length;
      check(
        heard === 1,
        published > 1
          ? `The worker published the status of ${doc} ${published} times${rotated}: publish it once, in the hand-off's MULTI.`
          : reports(events[0], doc)
            ? `The status watcher called onEvent ${heard} times for the one status message of ${doc}${rotated} (the worker published it once), the message onEvent threw for (the check made it fail): either your listener called onEvent again after the exception (call it once, catch, log and go on), or it has ${heard} listeners on the channel (each subscribe() with a new function adds one; node-redis subscribes again by itself after a reconnect, so subscribe once, in watchStatus()).`
            : `The status watcher called onEvent ${heard} times for the one status message of ${doc}${rotated} (the worker published it once), so it has ${heard} listeners on the channel. Each subscribe() with a new function adds one; node-redis subscribes again by itself after a reconnect, so subscribe once, in watchStatus().`,
        published > 1 ? 4 : 2,
      );
      if (round === 0) {
        // An exception from onEvent that escaped the listener was heard by now.
        await sleep(50);
        unheard.expectNone("onEvent", doc, "status watcher", 2);
        check(
          rejections.heard.length === 0,
          `onEvent() threw for ${doc} (the check made it fail), and your status watcher turned that into a promise rejection nobody handles: onEvent() runs inside an async function whose promise nobody awaits (an async message listener, or a for-await loop, which also ends there), so the exception rejects it, and Node ends a process on an unhandled rejection. Call onEvent() from a plain listener, inside a try/catch.`,
          2,
        );
      }
    }

    const stopping = Date.now();
    await call("worker.stop()", () => running.stop(), BLOCK_MS + 2000).catch((error: Error) =>
      fail(
        `${error.message} Nothing was waiting in the stream: stop() must return within one read, so read with BLOCK blockMs (never 0) and look at the stop flag between reads.`,
        4,
      ),
    );
    const took = Date.now() - stopping;
    await call("watcher.stop()", () => watcher.stop(), 2000);
    check(
      took < BLOCK_MS + 1500,
      `stop() took ${took} ms on a quiet stream; the worker reads with BLOCK ${BLOCK_MS}, so it should return within one read.`,
      4,
    );
    // Three seconds: a connection closed by a right stop() leaves CLIENT LIST within
    // milliseconds, but on a loaded machine the server may list it a little longer.
    await until(async () => (await learnerConnections(fixture.admin)).length === 0, 3000);
    const stillOpen = await learnerConnections(fixture.admin);
    check(
      stillOpen.length === 0,
      `After stop() your worker or watcher still had ${stillOpen.length} connection(s) open (${stillOpen.map((c) => `${c.name ? `"${c.name}"` : "unnamed"}, last command ${c.cmd}`).join("; ")}): close (or destroy) the clients they created.`,
      4,
    );
    check(
      stageTimers.live() === 0,
      `After stop() your worker and watcher still had ${stageTimers.live()} setInterval() timer(s) running (one that refreshes the password, say): a stopped worker must leave nothing scheduled, or the process never exits and goes on asking for tokens. Let the credentials provider ask conn.password() when a connection is made, or clear your timer in stop().`,
      4,
    );
    // A timer of the loop's own (a pause after a failed read) fires within moments.
    await until(() => heldTimers.live() === 0, 2000);
    check(
      heldTimers.live() === 0,
      `After stop() your worker and watcher still had ${heldTimers.live()} setTimeout() timer(s) waiting (a token refresh that schedules its next run, say): a stopped worker must leave nothing scheduled, or the process never exits and goes on asking for tokens. Let the credentials provider ask conn.password() when a connection is made, or keep the timer and clearTimeout() it in stop().`,
      4,
    );
    await until(() => ownTimers.live() === 0, 2000);
    check(
      ownTimers.live() === 0,
      `After stop() your worker and watcher still had ${ownTimers.live()} timer(s) of your own waiting (a token refresh that schedules its next run, say), unref()'d so that they do not keep the process alive: a stopped worker must leave nothing scheduled. unref() lets a process exit, but a service that stops a worker and goes on (a redeploy, a scale-in) keeps a refresh asking Entra ID for tokens for a worker that is gone, one more chain for each worker it ever stopped. Let the credentials provider ask conn.password() when a connection is made, or keep the timer and clearTimeout() it in stop().`,
      4,
    );
  });

  test("watchStatus() rejects when the ACL keeps its account off the channel, and closes what it opened", async () => {
    const stage = names();
    // A dashboard account that may subscribe, but to another channel only: SUBSCRIBE gets NOPERM.
    const dashboard = await fixture.user("dashboard-elsewhere", [
      `&${fresh("other-status")}`,
      "+subscribe",
      "+unsubscribe",
      "+ping",
    ]);
    const open = async () =>
      String(await fixture.admin.sendCommand(["CLIENT", "LIST"]))
        .split("\n")
        .filter((line) => line.includes(` user=${dashboard.conn.username} `))
        .map((line) => `${/\baddr=(\S+)/.exec(line)?.[1]} as ${dashboard.conn.username}`);
    await expectRefusedStartCleanedUp({
      what: "watchStatus()",
      refusal: `The ACL keeps this dashboard's account off ${stage.status}, so Redis refused the SUBSCRIBE (NOPERM)`,
      start: () => exercise.watchStatus(dashboard.conn, stage.status, () => {}),
      keep: (watcher) => cleanup.push(async () => (watcher as Stoppable | undefined)?.stop()),
      leftOpen: async () => {
        await until(async () => (await open()).length === 0, 1000);
        return open();
      },
      hint: 3,
    });
  });

  test("a failed handle() leaves its document pending; a hand-off is one MULTI; stop() finishes the one in hand", async () => {
    const stage = names();
    await fixture.admin.xGroupCreate(stage.input, stage.group, "0", { MKSTREAM: true });
    // Rights enough for any worker: this test is about the loop, the ACL has a test of its own.
    const worker = await fixture.user("ocr-worker", ["~*", "&*", "+@all"]);
    const bad = fresh("bad");
    // Fails beside the last document, in the same read.
    const failing = fresh("bad");
    const thrown = fresh("throws");
    const [first, last] = [fresh("slow"), fresh("slow")];
    const called: string[] = [];
    // Each slow document's handle() waits until the check releases it.
    const gates = new Map<string, () => void>();
    const gated = new Map<string, Promise<void>>();
    for (const doc of [first, last]) {
      gated.set(doc, new Promise<void>((resolve) => gates.set(doc, resolve)));
    }
    const release = (doc: string) => gates.get(doc)?.();
    const handle = ((doc: string) => {
      called.push(doc);
      if (doc === thrown) throw new Error(`OCR crashed on ${doc}`);
      if (doc === bad || doc === failing) return Promise.reject(new Error(`OCR failed on ${doc}`));
      const gate = gated.get(doc);
      if (gate) return gate;
      return Promise.resolve();
    }) as (doc: string) => Promise<void>;
    // In a scope of its own, so the timers the worker's own code keeps waiting can be counted.
    const loop = scope("loop");
    const loopTimers = scopeTimers(loop, { createdIn: ctx.target });
    cleanup.push(async () => loopTimers.stop());
    const running = await call(
      "startStage()",
      () => loop.run(() => exercise.startStage(worker.conn, stage, handle, BLOCK_MS)),
      5000,
    );
    let stopped = false;
    cleanup.push(async () => {
      release(first);
      release(last);
      if (!stopped) await running.stop();
    });

    const output = async () =>
      ((await fixture.admin.xRange(stage.output, "-", "+")) ?? []).map((e) => e?.message.doc);
    const pending = async () =>
      (await fixture.admin.xPendingRange(stage.input, stage.group, "-", "+", 100)).length;
    // `readWith`: how many more entries may have been read with it (and failed, or wait in hand).
    const inHand = async (doc: string, before: number, readWith = 0) => {
      await eventually(() => called.includes(doc), 3000, `handle() was not called for ${doc}.`, 4);
      const now = await pending();
      check(
        !(await output()).includes(doc) && now >= before + 1 && now <= before + 1 + readWith,
        "The document was acknowledged or passed on while handle() was still working on it: acknowledge only after handle() finished.",
        4,
      );
      const holders = (
        await fixture.admin.xPendingRange(stage.input, stage.group, "-", "+", 100)
      ).map((entry) => String(entry.consumer));
      const other = holders.find((holder) => holder !== stage.consumer);
      check(
        other === undefined,
        `While handle() worked on ${doc}, the group listed it as pending for the consumer "${other}", not for names.consumer ("${stage.consumer}"). Read as the consumer you were given (XREADGROUP GROUP <group> <consumer>): two workers under one consumer name mix up their pending entries, and recovery (lesson 09) cannot tell whose they are.`,
        4,
      );
    };
    const firstId = await fixture.admin.xAdd(stage.input, "*", { doc: first });
    await inHand(first, 0);
    release(first);
    await eventually(
      async () => (await output()).includes(first) && (await pending()) === 0,
      3000,
      `Once handle() finished, ${first} must be passed on and acknowledged.`,
      4,
    );
    checkOneTransaction(
      sent(
        (c) =>
          (c.name === "XADD" && c.args[1] === stage.output && c.args.includes(first)) ||
          (c.name === "XACK" && c.args[1] === stage.input && c.args.includes(firstId)) ||
          (c.name === "PUBLISH" &&
            c.args[1] === stage.status &&
            c.args[2]?.includes(first) === true),
      ),
      first,
    );

    // A read with no COUNT takes the whole backlog at once: every waiting document is delivered
    // to this consumer (pending for it alone) and stop() waits for all of them.
    // So does a COUNT in the thousands, a backlog's worth.
    const reads = sent((c) => c.name === "XREADGROUP" && c.args.includes(stage.input));
    const countOf = (c: SentCommand) => {
      const at = c.args.findIndex((a) => a.toUpperCase() === "COUNT");
      return at < 0 ? Number.NaN : Number(c.args[at + 1]);
    };
    const unbounded = reads.map(countOf).find((n) => !(n <= MAX_COUNT));
    check(
      reads.length > 0 && unbounded === undefined,
      reads.length === 0
        ? `Your worker handed ${first} on, but the check saw no XREADGROUP on ${stage.input}: read the stage's stream through the group.`
        : `Your worker's XREADGROUP on ${stage.input} had ${Number.isNaN(unbounded) ? "no COUNT" : `COUNT ${unbounded}, more than ${MAX_COUNT}`}: with 100 000 documents waiting, one read takes ${Number.isNaN(unbounded) ? "them all" : `${unbounded} of them`} into memory, delivers them all to this one consumer (pending for it alone, while other workers wait idle), and a stop() waits until it has worked through every one. Read a few at a time: XREADGROUP ... COUNT 10 BLOCK <blockMs>.`,
      4,
    );

    // One MULTI: a worker reading more than one entry at a time gets all three in one reply, so
    // a failure that skips the rest of its batch leaves `ok` delivered and never handed on.
    const ok = fresh("ok");
    await fixture.admin
      .multi()
      .xAdd(stage.input, "*", { doc: bad })
      .xAdd(stage.input, "*", { doc: thrown })
      .xAdd(stage.input, "*", { doc: ok })
      .exec();
    if (!(await until(async () => (await output()).includes(ok), 4000))) {
      fail(
        `After handle() failed (one rejected, one threw), the worker did not go on to the next document ${ok}: ${
          called.includes(ok)
            ? "handle() finished it, but it was not handed on."
            : (await pending()) === 3
              ? "it was read with the failed ones (it is pending in the group) but handle() was never called for it. A failure must skip only its own document: catch it around each document, not around the batch, and continue with the next entry."
              : "catch the failure and continue with the next entry."
        }`,
        4,
      );
    }
    const out = await output();
    check(
      !out.includes(bad) && !out.includes(thrown),
      "A document whose handle() failed was passed on to the next stage: hand off only after handle() succeeded.",
      4,
    );
    check(
      (await pending()) === 2,
      `The two documents whose handle() failed must stay pending in the group (not acknowledged), so they can be taken back; ${await pending()} entries are pending.`,
      4,
    );

    // `last` comes in one read with a document whose handle() fails at once: a worker may handle
    // a read's documents side by side, but must not move on (nor let stop() return) while one
    // of them is still in hand.
    const [lastId] = await fixture.admin
      .multi()
      .xAdd(stage.input, "*", { doc: last })
      .xAdd(stage.input, "*", { doc: failing })
      .exec();
    await inHand(last, 2, 1);
    let returned = false;
    const stopping = running.stop().finally(() => {
      returned = true;
    });
    stopping.catch(() => {});
    // A worker that moved on is blocked in its next read: a new entry ends that read at once,
    // and such a worker finishes and returns from stop(). One that waits for `last` sends
    // nothing meanwhile and waits for no timer of its own: once none of its commands is on its
    // way and none of its timers is waiting (a back-off after the failed batch, say), stop()
    // has had its chance.
    await fixture.admin.xAdd(stage.input, "*", { doc: fresh("late") });
    const idle = () => nothingInFlight() && loopTimers.live() === 0;
    // Idle twice in a row, a poll apart: between a reply and the commands it leads to, the
    // worker's next step is only a moment away.
    const quiet = async () => {
      if (!idle()) return false;
      await sleep(20);
      return idle();
    };
    await until(async () => returned || (await quiet()), 2000);
    const movedOn = called.includes(failing)
      ? ` ${failing}, read together with it, had failed: one try/catch around a Promise.all of the batch moves on as soon as one document fails, while the others are still in hand. Catch each document's failure on its own (or use Promise.allSettled), and read again only when the whole batch is finished.`
      : "";
    check(
      !returned,
      `stop() returned while handle() was still working on ${last}: it must wait until the document in hand is handed on and acknowledged, and its connection closed, so the caller can exit right after it.${movedOn}`,
      4,
    );
    release(last);
    await call("worker.stop()", () => stopping, BLOCK_MS + 2000);
    stopped = true;
    const lastPending = (
      await fixture.admin.xPendingRange(stage.input, stage.group, "-", "+", 100)
    ).some((entry) => entry.id === String(lastId));
    check(
      (await output()).includes(last) && !lastPending,
      "stop() was called while handle() was working on a document, and that document was not finished (handed on and acknowledged): stop() must let the document in hand finish before it closes the connection.",
      4,
    );
  });

  test("an idle worker lets Redis wait for new entries (BLOCK) instead of asking again at once", async () => {
    const stage = names();
    const { reads, running } = await startQuietWorker(stage);
    // Nothing is waiting in the stream: a read with BLOCK waits on Redis for blockMs, a poll
    // waits on a timer of its own; one that does neither comes back empty and asks again at once.
    const { rounds, elapsed } = await readsWhileTheCheckPaces(reads);
    // Redis ends a blocked read on its next turn after the timeout: on a server others keep busy,
    // BLOCK 1 is a read every millisecond or two, while on a quiet one it can pass for a poll.
    const short = reads()
      .map((c) => Number(c.args[c.args.findIndex((a) => /^block$/i.test(a)) + 1]))
      .find((ms) => ms > 0 && ms < MIN_BLOCK_MS);
    check(
      short === undefined,
      `On a quiet stream (nothing to read), your worker read with XREADGROUP ... BLOCK ${short}: Redis waits only ${short} ms for a new entry before the read comes back empty, and the loop asks again. On a Redis that other clients keep busy, that is a read every millisecond or two, all night. Pass the blockMs startStage() is given (${BLOCK_MS} here): XREADGROUP ... COUNT 10 BLOCK <blockMs>.`,
      4,
    );
    check(
      rounds <= YARDSTICK_ROUNDS * SPIN_SHARE,
      `On a quiet stream (nothing to read), your worker sent ${rounds} XREADGROUPs in ${elapsed} ms, as many as the check's own ${YARDSTICK_ROUNDS} PINGs, sent one after the other with a 1 ms pause between them: it asks again as soon as a read comes back empty. An idle worker that does so spins the CPU and floods Redis with reads for nothing, all night. Let Redis wait for new entries: XREADGROUP ... COUNT 10 BLOCK <blockMs> (or pause between empty reads).`,
      4,
    );
    // An entry ends the read blocked now, so that stop() need not wait out its blockMs.
    const stopped = running.stop();
    stopped.catch(() => {});
    await fixture.admin.xAdd(stage.input, "*", { doc: fresh("wake") });
    await call("worker.stop()", () => stopped, BLOCK_MS + 2000);
  });

  test("a worker whose reads fail at once (its group is gone) waits a moment before each next read", async () => {
    const stage = names();
    const { reads } = await startQuietWorker(stage);
    // As an operator or a clean-up script can; an ACL that lost a right fails each read at once
    // the same way.
    const destroyed = sent().at(-1)?.seq ?? 0;
    await fixture.admin.xGroupDestroy(stage.input, stage.group);
    const { rounds, elapsed } = await readsWhileTheCheckPaces(reads);
    check(
      rounds <= YARDSTICK_ROUNDS * SPIN_SHARE,
      `While every read failed at once (the check destroyed the stage's group with XGROUP DESTROY, and Redis answers each XREADGROUP with NOGROUP at once, as it answers NOPERM once an ACL lost a right), your worker sent ${rounds} XREADGROUPs in ${elapsed} ms, as many as the check's own ${YARDSTICK_ROUNDS} PINGs, sent one after the other with a 1 ms pause between them: it caught the error and read again at once (or after a millisecond or so). Such a loop spins the CPU and floods Redis and your log for as long as the cause lasts. After a failed read, wait a moment (100 ms or so) before the next one.`,
      4,
    );
    // The cause passes (the group is made again, the right given back): the worker, still
    // running, takes the work that comes next. A loop that ends on NOGROUP, or after a few
    // failed reads, leaves the stage dead until someone restarts it.
    await until(() => reads(destroyed).length >= 3, 3000);
    await fixture.admin.xGroupCreate(stage.input, stage.group, "$");
    const doc = fresh("doc");
    await fixture.admin.xAdd(stage.input, "*", { doc });
    await eventually(
      async () =>
        ((await fixture.admin.xRange(stage.output, "-", "+")) ?? []).some(
          (e) => e?.message?.doc === doc,
        ),
      3000,
      `The check destroyed the stage's group (every read failed with NOGROUP), made it again, and added ${doc}: within 3 s your worker did not hand it on to ${stage.output}. Its loop ended on the failed reads, so the stage stays dead, with stop() not called, until someone restarts it. A failed read, whatever the error, is the trouble of the moment: wait a moment and read again, for as long as the worker runs.`,
      4,
    );
  });
});

/**
 * Starts the learner's worker on an empty stream whose group exists, and waits for its first
 * read; returns its reads of the stream after a seq. Stopped in cleanup, where an error the
 * loop ended on (its group destroyed) is its own business.
 */
async function startQuietWorker(
  stage: StageNames,
): Promise<{ reads: (after?: number) => SentCommand[]; running: Stoppable }> {
  await fixture.admin.xGroupCreate(stage.input, stage.group, "0", { MKSTREAM: true });
  const worker = await fixture.user("ocr-worker", ["~*", "&*", "+@all"]);
  const reads = (after = 0) =>
    sent((c) => c.seq > after && c.name === "XREADGROUP" && c.args.includes(stage.input));
  const running = await call(
    "startStage()",
    () => exercise.startStage(worker.conn, stage, async () => {}, BLOCK_MS),
    5000,
  );
  cleanup.push(() => running.stop().catch(() => {}));
  await eventually(
    () => reads().length > 0,
    3000,
    `startStage() sent no XREADGROUP on ${stage.input} within 3 s: read the stage's stream through the group.`,
    4,
  );
  return { reads, running };
}

/**
 * The check's PINGs, one after the other with a 1 ms pause, that time the window, and the share
 * of as many reads in it that makes a loop that does not pause, or pauses a millisecond: it
 * sends about one read per PING, whatever a round trip takes on a loaded machine. One pausing
 * 20 ms stays below it until a round trip and a timer take 27 ms.
 */
const YARDSTICK_ROUNDS = 50;
/** A read that blocks for less than this is a spin on a busy server, whatever it counts here. */
const MIN_BLOCK_MS = 10;
const SPIN_SHARE = 0.6;

/**
 * How many of the learner's reads (`reads(after)`: those after a seq) went out while the check
 * sent its YARDSTICK_ROUNDS paced PINGs on the same server, from the same process, so that a
 * loaded machine slows both alike; and how long that took.
 */
async function readsWhileTheCheckPaces(
  reads: (after: number) => SentCommand[],
): Promise<{ rounds: number; elapsed: number }> {
  const mark = sent().at(-1)?.seq ?? 0;
  const started = Date.now();
  for (let round = 0; round < YARDSTICK_ROUNDS; round++) {
    await fixture.admin.ping();
    await sleep(1);
  }
  return { rounds: reads(mark).length, elapsed: Date.now() - started };
}

/**
 * The hand-off of `doc` as the learner's connections sent it: XADD, XACK and PUBLISH all inside
 * one MULTI ... EXEC (or none of them sent on their own: a script did it). Sent one by one, a
 * crash between them hands the document on without acknowledging it (the next worker hands it
 * on again), or acknowledges it without the status event.
 */
function checkOneTransaction(parts: SentCommand[], doc: string): void {
  const multi = parts[0]?.multi;
  if (parts.length === 0) return;
  const blocks = [...new Set(parts.map((c) => c.multi).filter((m) => m !== undefined))];
  const how = parts
    .map(
      (c) =>
        `${c.name} ${c.multi === undefined ? "on its own" : `in MULTI ${blocks.indexOf(c.multi) + 1}`}`,
    )
    .join(", ");
  check(
    parts.length === 3 && multi !== undefined && parts.every((c) => c.multi === multi),
    `The hand-off of ${doc} was not one transaction: your code sent ${how}. A crash between them leaves the document handed on but still pending (the next worker hands it on twice) or acknowledged with no status event. Queue the XADD, the XACK and the PUBLISH on one client.multi() and exec() it once.`,
    4,
  );
}
