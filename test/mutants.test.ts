/**
 * The mutants `npm run mutate` makes of a solution (src/dev/mutants.ts): each operator on a small
 * source, the exact mutants expected. The runs themselves are too slow for `npm test`.
 */
import { describe, expect, test } from "vitest";
import { type Mutant, mutants, type Operator } from "../src/dev/mutants.ts";

const source = `import { createClient } from "redis";
type Task = { id: string };

export async function work(client: ReturnType<typeof createClient>, tasks: Task[]) {
  const done: string[] = [];
  const seen = 0;
  for (const task of tasks) {
    if (!task.id) continue;
    await client.hSet(task.id, {
      state: "done",
    });
    done.push(task.id);
  }
  while (done.length < tasks.length && seen === 0) {
    await client.quit();
  }
  return done;
}
`;

const view = (list: Mutant[]) => list.map((m) => [m.line, m.key]);
const only = (operator: Operator) => mutants(source, [operator]);

/** The mutated text of the one mutant whose key contains `part`. */
function textOf(list: Mutant[], part: string): string {
  const found = list.filter((m) => m.key.includes(part));
  expect(found, part).toHaveLength(1);
  return found[0]?.text ?? "";
}

describe("mutants", () => {
  test("await: each await removed, one at a time", () => {
    const list = only("await");
    expect(view(list)).toEqual([
      [9, 'await: remove the await of `client.hSet(task.id, { state: "done", })`'],
      [15, "await: remove the await of `client.quit()`"],
    ]);
    expect(textOf(list, "quit")).toBe(source.replace("await client.quit()", "client.quit()"));
  });

  test("delete: whole statements however many lines, never imports, types or a const still used", () => {
    const list = only("delete");
    expect(view(list)).toEqual([
      [
        7,
        "delete: delete `for (const task of tasks) { if (!task.id) continue; await client.hSet(t…`",
      ],
      [8, "delete: delete `if (!task.id) continue;`"],
      [9, 'delete: delete `await client.hSet(task.id, { state: "done", });`'],
      [12, "delete: delete `done.push(task.id);`"],
      [
        14,
        "delete: delete `while (done.length < tasks.length && seen === 0) { await client.quit();…`",
      ],
      [15, "delete: delete `await client.quit();`"],
      [17, "delete: delete `return done;`"],
    ]);
    // The three lines of the hSet go together, with their line break.
    expect(textOf(list, "delete `await client.hSet")).toBe(
      source.replace('    await client.hSet(task.id, {\n      state: "done",\n    });\n', ""),
    );
  });

  test("swap: adjacent statements of one block, not a use above its declaration, not two reads", () => {
    const list = only("swap");
    // `const seen = 0` reads nothing: moving it below the loop changes nothing.
    expect(view(list)).toEqual([
      [
        7,
        "swap: swap `for (const task of tasks) { if (!task.i…` with the next statement `while (done.length < tasks.length && se…`",
      ],
      [
        8,
        'swap: swap `if (!task.id) continue;` with the next statement `await client.hSet(task.id, { state: "do…`',
      ],
      [
        9,
        'swap: swap `await client.hSet(task.id, { state: "do…` with the next statement `done.push(task.id);`',
      ],
    ]);
    expect(textOf(list, "with the next statement `done.push")).toBe(
      source.replace(
        '    await client.hSet(task.id, {\n      state: "done",\n    });\n    done.push(task.id);',
        '    done.push(task.id);\n    await client.hSet(task.id, {\n      state: "done",\n    });',
      ),
    );
  });

  test("condition: if and while negated, comparisons and && / || flipped", () => {
    const list = only("condition");
    expect(view(list)).toEqual([
      [8, "condition: negate `if (!task.id)`"],
      [14, "condition: negate `while (done.length < tasks.length && seen === 0)`"],
      [14, "condition: `<` to `<=` in `done.length < tasks.length`"],
      [14, "condition: `&&` to `||` in `done.length < tasks.length && seen === 0`"],
      [14, "condition: `===` to `!==` in `seen === 0`"],
    ]);
    expect(textOf(list, "negate `if")).toBe(source.replace("if (!task.id)", "if (task.id)"));
    expect(textOf(list, "negate `while")).toBe(
      source.replace(
        "while (done.length < tasks.length && seen === 0)",
        "while (!(done.length < tasks.length && seen === 0))",
      ),
    );
    expect(textOf(list, "`<` to `<=`")).toBe(
      source.replace("done.length < tasks", "done.length <= tasks"),
    );
  });

  test("the same code twice gets keys of its own, and every mutant differs from the source", () => {
    const twice =
      "export async function f(c: { quit(): Promise<void> }) {\n  await c.quit();\n  await c.quit();\n}\n";
    expect(mutants(twice, ["await"]).map((m) => m.key)).toEqual([
      "await: remove the await of `c.quit()`",
      "await: remove the await of `c.quit()` #2",
    ]);
    // Swapping two equal statements changes nothing: no mutant.
    expect(mutants(twice, ["swap"])).toEqual([]);
    for (const m of mutants(source)) expect(m.text).not.toBe(source);
  });

  test("swap leaves a function written here alone: what it reads, it reads when called", () => {
    const closure = [
      "export async function f(c: { quit(): Promise<void> }, log: (m: string) => void) {",
      "  await c.quit();",
      "  const listener = (m: string) => log(m);",
      "  await c.quit();",
      "  return listener;",
      "}",
      "",
    ].join("\n");
    expect(mutants(closure, ["swap"])).toEqual([]);
  });
});

describe("mutants of options and special values", () => {
  const redis = `import { createClient } from "redis";

export async function consume(client: ReturnType<typeof createClient>, stream: string, last: string, blockMs = 1000) {
  await client.xGroupCreate(stream, "g", "0", { MKSTREAM: true });
  await client.sendCommand(["XAUTOCLAIM", stream, "g", "c", "5000", "0-0", "COUNT", "10", "JUSTID"]);
  const page = await client.xRange(stream, \`(\${last}\`, "+", { COUNT: 10 });
  if (page.length > 0) console.log("read", ">", 20);
  return { count: 2 };
}
`;

  test("property: one option of an argument object, one option (with its value) of a command array", () => {
    expect(view(mutants(redis, ["property"]))).toEqual([
      [4, "property: remove `MKSTREAM: true` from `{ MKSTREAM: true }`"],
      [
        5,
        'property: remove `"COUNT", "10"` from `["XAUTOCLAIM", stream, "g", "c", "5000", "0-0", "COUNT", "1…`',
      ],
      [
        5,
        'property: remove `"JUSTID"` from `["XAUTOCLAIM", stream, "g", "c", "5000", "0-0", "COUNT", "1…`',
      ],
      [6, "property: remove `COUNT: 10` from `{ COUNT: 10 }`"],
    ]);
    const list = mutants(redis, ["property"]);
    expect(textOf(list, "MKSTREAM")).toBe(redis.replace("{ MKSTREAM: true }", "{}"));
    expect(textOf(list, '"JUSTID"')).toBe(redis.replace(', "JUSTID"', ""));
    expect(textOf(list, '"COUNT", "10"')).toBe(redis.replace('"COUNT", "10", ', ""));
  });

  test("literal: special IDs to their neighbours, an exclusive start made inclusive, times and counts scaled", () => {
    // Not the log line's ">" nor its 20, not the port-free object's key, not the type's 1000.
    expect(view(mutants(redis, ["literal"]))).toEqual([
      [3, "literal: `1000` to `1000000` in `blockMs = 1000`"],
      [3, "literal: `1000` to `1` in `blockMs = 1000`"],
      [4, 'literal: `"0"` to `">"` in `client.xGroupCreate(stream, "g", "0", { MKSTREAM: true })`'],
      [4, 'literal: `"0"` to `"$"` in `client.xGroupCreate(stream, "g", "0", { MKSTREAM: true })`'],
      [
        5,
        'literal: `"0-0"` to `"$"` in `client.sendCommand(["XAUTOCLAIM", stream, "g", "c", "5000",…`',
      ],
      [
        6,
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a description quotes template code
        'literal: ``(${last}`` to ``${last}`` in `client.xRange(stream, `(${last}`, "+", { COUNT: 10 })`',
      ],
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a description quotes template code
      [6, 'literal: `"+"` to `"-"` in `client.xRange(stream, `(${last}`, "+", { COUNT: 10 })`'],
      [6, "literal: `10` to `10000` in `COUNT: 10`"],
      [6, "literal: `10` to `1` in `COUNT: 10`"],
      [7, "literal: `0` to `1` in `page.length > 0`"],
      [8, "literal: `2` to `2000` in `count: 2`"],
      // 2 / 1000 is 1 (never 0): the same mutant as 2 - 1, made once.
      [8, "literal: `2` to `1` in `count: 2`"],
      [8, "literal: `2` to `3` in `count: 2`"],
    ]);
    const list = mutants(redis, ["literal"]);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a description quotes template code
    expect(textOf(list, "``(${last}``")).toBe(redis.replace("`(${last}`", "`${last}`"));
    expect(textOf(list, '`"0"` to `"$"`')).toBe(redis.replace('"g", "0"', '"g", "$"'));
  });
});

describe("mutants of failure handling and loops", () => {
  const loops = `type C = { connect(): Promise<void>; quit(): Promise<void>; xAck(id: string): Promise<number> };

export async function drain(client: C, ids: string[], done: () => boolean) {
  await client.connect();
  const acked = await client.xAck("first");
  for (const id of ids) {
    if (!id) continue;
    await client.xAck(id);
  }
  while (ids.length > 0) {
    if (ids.pop() === "x") break;
    await client.quit();
  }
  while (!done()) {
    await client.connect();
  }
  try {
    await client.quit();
  } catch {}
  try {
    await client.quit();
  } finally {
    ids.length = 0;
  }
  const later = async () => {
    await client.quit();
  };
  return [acked, later];
}
`;

  test("detach: an await whose value is unused made fire-and-forget, its rejection caught", () => {
    const list = mutants(loops, ["detach"]);
    // Not `const acked = await ...`: its value is used.
    expect(view(list)).toEqual([
      [4, "detach: detach `client.connect()`: not awaited, its failure caught and ignored"],
      [8, "detach: detach `client.xAck(id)`: not awaited, its failure caught and ignored"],
      [12, "detach: detach `client.quit()`: not awaited, its failure caught and ignored"],
      [15, "detach: detach `client.connect()`: not awaited, its failure caught and ignored #2"],
      [18, "detach: detach `client.quit()`: not awaited, its failure caught and ignored #2"],
      [21, "detach: detach `client.quit()`: not awaited, its failure caught and ignored #3"],
      [26, "detach: detach `client.quit()`: not awaited, its failure caught and ignored #4"],
    ]);
    expect(textOf(list, "`client.xAck(id)`")).toBe(
      loops.replace("await client.xAck(id);", "void client.xAck(id).catch(() => {});"),
    );
  });

  test("swallow: an awaited statement wrapped in try/catch, not one in a try already", () => {
    const list = mutants(loops, ["swallow"]);
    // Not line 18 (inside a try with a catch); line 21 is in a try with only a finally, and line
    // 26 in a function of its own, which no try covers.
    expect(view(list)).toEqual([
      [4, "swallow: swallow the failure of `await client.connect();` in try/catch"],
      [8, "swallow: swallow the failure of `await client.xAck(id);` in try/catch"],
      [12, "swallow: swallow the failure of `await client.quit();` in try/catch"],
      [15, "swallow: swallow the failure of `await client.connect();` in try/catch #2"],
      [21, "swallow: swallow the failure of `await client.quit();` in try/catch #2"],
      [26, "swallow: swallow the failure of `await client.quit();` in try/catch #3"],
    ]);
    expect(textOf(list, "`await client.xAck(id);`")).toBe(
      loops.replace("await client.xAck(id);", "try { await client.xAck(id); } catch {}"),
    );
  });

  test("once: a while without jumps as an if, any other loop with a break at the end of its body", () => {
    const list = mutants(loops, ["once"]);
    expect(view(list)).toEqual([
      [
        6,
        "once: `for (const id of ids)` with a break at the end: one round only (unless it continues)",
      ],
      [10, "once: `while (ids.length > 0)` with a break at the end: one round only"],
      [14, "once: `while (!done())` as an if: one round only"],
    ]);
    expect(textOf(list, "`while (!done())`")).toBe(
      loops.replace("while (!done())", "if (!done())"),
    );
    expect(textOf(list, "`while (ids.length > 0)`")).toBe(
      loops.replace(
        "    await client.quit();\n  }\n  while",
        "    await client.quit();\n    break;\n  }\n  while",
      ),
    );
    expect(textOf(list, "`for (const id of ids)`")).toBe(
      loops.replace("await client.xAck(id);\n  }", "await client.xAck(id);\n    break;\n  }"),
    );
  });
});
