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

  const forbidden: [string, string[], string][] = [
    ["write a key outside its streams", ["SET", `${stage.output}:other`, "x"], KEYS_ADVICE],
    [
      "add to another stage's stream",
      ["XADD", `${stage.input}:other`, "*", "doc", "x"],
      KEYS_ADVICE,
    ],
    ["publish on another channel", ["PUBLISH", `${stage.status}:other`, "x"], KEYS_ADVICE],
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
}

/** The ID of the first entry in an XREADGROUP reply, RESP3 (a map) or RESP2 (an array). */
function firstId(reply: unknown): string {
  const streams = Array.isArray(reply)
    ? reply.map((stream) => (stream as [unknown, unknown])[1])
    : Object.values(reply as Record<string, unknown>);
  const entries = streams[0] as [string, unknown][] | undefined;
  return entries?.[0]?.[0] ?? "0-0";
}
