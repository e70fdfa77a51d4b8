/**
 * Proves an ACL for a stage worker is least privilege: the check logs in as the user made from
 * the learner's rules and tries what the stage needs (all must work) and what it must never do
 * (each must be refused with NOPERM).
 */
import { check, fail, fresh } from "../kit.ts";
import type { Fixture } from "./fixture.ts";

interface StageNames {
  input: string;
  group: string;
  consumer: string;
  output: string;
  status: string;
}

const KEYS_ADVICE =
  "List the stage's two streams with ~<key> and its channel with &<channel>; never ~* or &* (allkeys, allchannels).";
const COMMANDS_ADVICE =
  "Grant the commands it uses one by one (+xreadgroup ...), not +@all or a whole category such as +@stream or +@write.";

export async function checkLeastPrivilege(
  fixture: Fixture,
  stage: StageNames,
  rules: string[],
): Promise<void> {
  const { admin } = fixture;
  await admin.xGroupCreate(stage.input, stage.group, "0", { MKSTREAM: true });
  await admin.xAdd(stage.input, "*", { doc: fresh("doc") });
  let user: Awaited<ReturnType<Fixture["user"]>>;
  try {
    user = await fixture.user("ocr-worker", rules);
  } catch (error) {
    fail(`ACL SETUSER refused your rules ${JSON.stringify(rules)}: ${(error as Error).message}`, 3);
  }
  const probe = await fixture.probe(user);
  const run = (args: string[]) =>
    probe.sendCommand(args).then(
      () => undefined,
      (error: Error) => error,
    );

  const read = (await probe
    .sendCommand([
      "XREADGROUP",
      "GROUP",
      stage.group,
      stage.consumer,
      "COUNT",
      "1",
      "STREAMS",
      stage.input,
      ">",
    ])
    .catch((error: Error) => error)) as unknown;
  if (read instanceof Error) {
    fail(
      `Your ACL refuses what the stage must do: XREADGROUP on ${stage.input} (${read.message}).`,
      3,
    );
  }
  const id = firstId(read);
  const needed: [string, string[]][] = [
    ["XACK on its input", ["XACK", stage.input, stage.group, id]],
    ["XADD to its output", ["XADD", stage.output, "*", "doc", "probe"]],
    ["PUBLISH on its status channel", ["PUBLISH", stage.status, "{}"]],
  ];
  for (const [what, args] of needed) {
    const error = await run(args);
    if (error) fail(`Your ACL refuses what the stage must do: ${what} (${error.message}).`, 3);
  }
  // A refused MULTI does not stop the commands queued after it: they run one by one, and only
  // EXEC fails. The hand-off must go through as one transaction.
  const handOff = await probe
    .multi()
    .xAdd(stage.output, "*", { doc: "probe" })
    .xAck(stage.input, stage.group, id)
    .publish(stage.status, "{}")
    .exec()
    .then(
      () => undefined,
      (error: Error) => error,
    );
  if (handOff) {
    fail(
      `Your ACL refuses the hand-off as one transaction: MULTI, XADD, XACK, PUBLISH, EXEC failed (${handOff.message}). Without +multi and +exec the server refuses MULTI, runs the three commands one by one, and refuses EXEC: grant +multi and +exec too.`,
      3,
    );
  }

  const forbidden: [string, string[], string][] = [
    ["write a key outside its streams", ["SET", `${stage.output}:other`, "x"], KEYS_ADVICE],
    [
      "add to another stage's stream",
      ["XADD", `${stage.input}:other`, "*", "doc", "x"],
      KEYS_ADVICE,
    ],
    [
      "add to a stream of another stage",
      ["XADD", `${fresh("classify")}:tasks`, "*", "doc", "x"],
      KEYS_ADVICE,
    ],
    ["publish on another channel", ["PUBLISH", `${stage.status}:other`, "x"], KEYS_ADVICE],
    ["publish on another stage's channel", ["PUBLISH", fresh("status"), "x"], KEYS_ADVICE],
    ["empty its own input", ["XTRIM", stage.input, "MAXLEN", "0"], COMMANDS_ADVICE],
    ["delete the next stage's stream", ["DEL", stage.output], COMMANDS_ADVICE],
    ["destroy its group", ["XGROUP", "DESTROY", stage.input, stage.group], COMMANDS_ADVICE],
    ["read the server's configuration", ["CONFIG", "GET", "maxmemory"], COMMANDS_ADVICE],
    ["wipe the whole database", ["FLUSHALL"], COMMANDS_ADVICE],
  ];
  for (const [what, args, advice] of forbidden) {
    const error = await run(args);
    check(
      error !== undefined && /^NOPERM/.test(error.message),
      error === undefined
        ? `Your ACL lets the stage worker ${what}: \`${args.join(" ")}\` succeeded. It may read and acknowledge its input, add to its output and publish status, nothing else. ${advice}`
        : `\`${args.join(" ")}\` should be refused with NOPERM; it failed with ${error.message}.`,
      3,
    );
  }
  await checkNoOtherCommands(admin, user.conn.username);
}

/** What the stage worker sends; anything else it may run is a right a thief would have too. */
const STAGE_COMMANDS = new Set(["xreadgroup", "xack", "xadd", "publish", "multi", "exec"]);

/**
 * Asks the server (ACL DRYRUN) about every command and subcommand it knows, so extra rights show
 * up however they were written: +xdel, +@stream -xtrim -xgroup, +xgroup|create, a selector.
 * Commands every connection may send (AUTH, HELLO), harmless connection commands (PING, CLIENT
 * SETNAME) and the transaction commands (WATCH only works on keys the user may touch) are let
 * through. Servers before 7.0 have no ACL DRYRUN: there the probes above are all
 * the check has.
 */
async function checkNoOtherCommands(admin: Fixture["admin"], username: string): Promise<void> {
  const table = (await admin.sendCommand(["COMMAND"])) as unknown[];
  const commands = table.flatMap((entry) => {
    const subcommands = (entry as unknown[])[9] as unknown[] | undefined;
    return subcommands?.length ? subcommands : [entry];
  });
  const granted = await Promise.all(
    commands.map(async (entry) => {
      const [name, arity, flagList, , , , categoryList] = entry as [
        string,
        number,
        Iterable<unknown>,
        ...Iterable<unknown>[],
      ];
      const lower = String(name).toLowerCase();
      const flags = [...flagList].map(String);
      const categories = [...(categoryList ?? [])].map(String);
      const harmless =
        flags.includes("no_auth") ||
        categories.includes("@transaction") ||
        (categories.includes("@connection") &&
          !categories.some((c) => c === "@admin" || c === "@dangerous"));
      if (STAGE_COMMANDS.has(lower) || harmless) return undefined;
      // DRYRUN checks the arity first: pad with a key name to the command's (minimum) length.
      const argv = lower.split("|");
      while (argv.length < Math.abs(arity)) argv.push("probe");
      const answer = await admin
        .sendCommand(["ACL", "DRYRUN", username, ...argv])
        .then(String, (error: Error) => error.message);
      return /^OK$|no permissions to access/.test(answer) ? lower : undefined;
    }),
  );
  const extra = granted.filter((name) => name !== undefined);
  if (extra.length === 0) return;
  const shown = extra
    .sort()
    .slice(0, 8)
    .map((name) => name.replace("|", " ").toUpperCase());
  const more = extra.length > 8 ? ` and ${extra.length - 8} more` : "";
  fail(
    `Your ACL also lets the stage worker run ${shown.join(", ")}${more} (ACL DRYRUN says so). The worker never sends these commands, and whoever steals its password can run them too, on the stage's own streams (XDEL deletes entries, XCLAIM takes another consumer's work). Grant exactly +xreadgroup +xack +xadd +publish +multi +exec. ${COMMANDS_ADVICE}`,
    3,
  );
}

/** The ID of the first entry in an XREADGROUP reply, RESP3 (a map) or RESP2 (an array). */
function firstId(reply: unknown): string {
  const streams = Array.isArray(reply)
    ? reply.map((stream) => (stream as [unknown, unknown])[1])
    : Object.values(reply as Record<string, unknown>);
  const entries = streams[0] as [string, unknown][] | undefined;
  return entries?.[0]?.[0] ?? "0-0";
}
