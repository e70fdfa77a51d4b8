/**
 * Mutants of a reference solution, for `npm run mutate` (./mutate.ts). Pure: source text in, a
 * list of mutants out, each one small wrong change a learner might make. A mutant the lesson's
 * check accepts is a wrong answer the check lets through (or a change that changes nothing,
 * which the lesson's mutants-equivalent.json then says, with why).
 *
 * The source is parsed with oxc-parser, so a statement is a statement however many lines it
 * spans, and a block nested in a callback is a block like any other.
 */
import { parseSync } from "oxc-parser";

export const OPERATORS = [
  "await",
  "delete",
  "swap",
  "condition",
  "property",
  "literal",
  "detach",
  "swallow",
  "once",
] as const;
export type Operator = (typeof OPERATORS)[number];

export interface Mutant {
  operator: Operator;
  /** 1-based line where the change starts. */
  line: number;
  /** One line for people: what was changed, quoting the code. */
  description: string;
  /**
   * What names this mutant in mutants-equivalent.json: the operator and the description, with
   * " #2", " #3" for a repeat of the same code. No line number: it must outlive edits elsewhere.
   */
  key: string;
  /** The whole mutated source. */
  text: string;
}

/** An oxc ESTree node: what this file reads of it. */
interface Node {
  type: string;
  start: number;
  end: number;
  [field: string]: unknown;
}

function isNode(value: unknown): value is Node {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as Node).type === "string" &&
    typeof (value as Node).start === "number"
  );
}

/** The fields of a node holding only types: no code runs there, so nothing to mutate or read. */
const TYPE_FIELDS = new Set(["typeAnnotation", "returnType", "typeParameters", "typeArguments"]);

/** Statements that are declarations only: deleting or moving one changes no behaviour, or cannot compile. */
function isInert(statement: Node): boolean {
  if (statement.type.startsWith("TS")) return true;
  if (statement.directive !== undefined && statement.directive !== null) return true;
  if (statement.declare === true) return true;
  return [
    "ImportDeclaration",
    "ExportNamedDeclaration",
    "ExportDefaultDeclaration",
    "ExportAllDeclaration",
    "FunctionDeclaration",
    "ClassDeclaration",
    "EmptyStatement",
  ].includes(statement.type);
}

/** Each child node of `node` with the field it is in; type-only fields left out. */
function* children(node: Node): Generator<[Node, string]> {
  for (const [field, value] of Object.entries(node)) {
    if (TYPE_FIELDS.has(field)) continue;
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item)) yield [item, field];
    } else if (isNode(value)) {
      yield [value, field];
    }
  }
}

/** Every node of the tree, parents first, with its parent. */
function* walk(node: Node, parent?: Node, field?: string): Generator<[Node, Node?, string?]> {
  yield [node, parent, field];
  if (node.type.startsWith("TS") && node.type.endsWith("Declaration")) return;
  for (const [child, key] of children(node)) yield* walk(child, node, key);
}

/** An identifier used as a name of the code (a variable), not a property key. */
function isName(node: Node, parent?: Node, field?: string): boolean {
  if (node.type !== "Identifier") return false;
  if (parent?.type === "MemberExpression" && field === "property" && !parent.computed) return false;
  if (parent?.type === "Property" && field === "key" && !parent.computed) return false;
  if (parent?.type === "PropertyDefinition" && field === "key" && !parent.computed) return false;
  if (parent?.type === "MethodDefinition" && field === "key" && !parent.computed) return false;
  return true;
}

interface Name {
  name: string;
  start: number;
}

/** Names declared by a `const`/`let` statement: deleting it, or moving a user above it, cannot compile. */
function declaredBy(statement: Node): string[] {
  if (statement.type !== "VariableDeclaration") return [];
  const names: string[] = [];
  for (const declarator of statement.declarations as Node[]) {
    for (const [node, parent, field] of walk(declarator.id as Node)) {
      if (isName(node, parent, field)) names.push(node.name as string);
    }
  }
  return names;
}

function lineOf(source: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset; i++) if (source.charCodeAt(i) === 10) line++;
  return line;
}

/** Code quoted in a description: one line, at most `max` characters. */
export function snippet(code: string, max = 72): string {
  const flat = code.replace(/\s+/g, " ").trim();
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

/** Replaces [start, end) of `source` with `by`. */
function splice(source: string, start: number, end: number, by: string): string {
  return source.slice(0, start) + by + source.slice(end);
}

/**
 * The span to delete for a statement: with its indentation and line break when it stands on
 * lines of its own, so the mutant reads like code a learner wrote.
 */
function deletionSpan(source: string, node: Node): [number, number] {
  let start = node.start;
  while (start > 0 && (source[start - 1] === " " || source[start - 1] === "\t")) start--;
  let end = node.end;
  while (end < source.length && (source[end] === " " || source[end] === "\t")) end++;
  const ownLines = (start === 0 || source[start - 1] === "\n") && source[end] === "\n";
  return ownLines ? [start, end + 1] : [node.start, node.end];
}

const FLIPS: Record<string, string> = {
  "<": "<=",
  "<=": "<",
  ">": ">=",
  ">=": ">",
  "===": "!==",
  "!==": "===",
  "==": "!=",
  "!=": "==",
  "&&": "||",
  "||": "&&",
};

const STATEMENT_LISTS: Record<string, string> = {
  Program: "body",
  BlockStatement: "body",
  StaticBlock: "body",
  SwitchCase: "consequent",
};

const JUMPS = new Set(["ReturnStatement", "ThrowStatement", "BreakStatement", "ContinueStatement"]);

/** What makes code do something beyond reading: two statements without any keep their effect in either order. */
const EFFECTS = new Set([
  "CallExpression",
  "NewExpression",
  "AwaitExpression",
  "AssignmentExpression",
  "UpdateExpression",
  "YieldExpression",
  "TaggedTemplateExpression",
  "ImportExpression",
  "ThrowStatement",
]);
const FUNCTIONS = new Set(["ArrowFunctionExpression", "FunctionExpression"]);
const LOOPS = new Set([
  "WhileStatement",
  "DoWhileStatement",
  "ForStatement",
  "ForOfStatement",
  "ForInStatement",
]);

/** A function written here or declared: its body runs when it is called. */
function isFunction(node: Node): boolean {
  return FUNCTIONS.has(node.type) || node.type === "FunctionDeclaration";
}

function hasEffects(node: Node): boolean {
  if (EFFECTS.has(node.type)) return true;
  if (node.type === "UnaryExpression" && node.operator === "delete") return true;
  // A function written here runs later, when called: writing it has no effect.
  if (FUNCTIONS.has(node.type)) return false;
  for (const [child] of children(node)) if (hasEffects(child)) return true;
  return false;
}

/**
 * Special strings of Redis and the neighbours a learner confuses them with: `">"` (new entries
 * of a group) and `"0"` (the consumer's own pending ones, or a group from the first entry), `"$"`
 * (only what comes after now), `"-"` and `"+"` (the ends of a range), `"0-0"` (a cursor or ID
 * from the start).
 */
const NEIGHBOURS: Record<string, string[]> = {
  ">": ["0"],
  "0": [">", "$"],
  $: ["0"],
  "-": ["+"],
  "+": ["-"],
  "0-0": ["$"],
};

/** String methods whose arguments are separators or text, not Redis values. */
const STRING_METHODS = new Set([
  "split",
  "join",
  "replace",
  "replaceAll",
  "startsWith",
  "endsWith",
  "includes",
  "indexOf",
  "lastIndexOf",
  "padStart",
  "padEnd",
  "slice",
  "substring",
  "at",
  "toFixed",
]);

const COMPARISONS = new Set(["<", "<=", ">", ">=", "===", "!==", "==", "!="]);

/** An option word of a Redis command written as an array: `"MKSTREAM"`, `"COUNT"`. */
function isOptionWord(node: Node | undefined): boolean {
  return (
    node !== undefined &&
    node.type === "Literal" &&
    typeof node.value === "string" &&
    /^[A-Z][A-Z_-]*$/.test(node.value)
  );
}

/** A number as a learner would write it. */
function numberText(value: number): string {
  return String(value);
}

/**
 * The mutants of `source` made by `operators`, in source order per operator. A mutant whose
 * text equals the source or an earlier mutant's is left out.
 */
export function mutants(
  source: string,
  operators: readonly Operator[] = OPERATORS,
  fileName = "solution.ts",
): Mutant[] {
  const parsed = parseSync(fileName, source, { lang: "ts", sourceType: "module" });
  if (parsed.errors.length > 0) {
    throw new Error(`${fileName} does not parse: ${parsed.errors[0]?.message ?? "unknown error"}`);
  }
  const program = parsed.program as unknown as Node;
  const nodes = [...walk(program)];
  const names: Name[] = [];
  const seenName = new Set<number>();
  for (const [node, parent, field] of nodes) {
    // A shorthand property's key and value are the same identifier, at the same place.
    if (isName(node, parent, field) && !seenName.has(node.start)) {
      seenName.add(node.start);
      names.push({ name: node.name as string, start: node.start });
    }
  }
  const usedOutside = (declared: string[], node: Node) =>
    names.some((n) => declared.includes(n.name) && (n.start < node.start || n.start >= node.end));
  const usedInside = (declared: string[], node: Node) =>
    names.some((n) => declared.includes(n.name) && n.start >= node.start && n.start < node.end);
  const code = (node: Node) => source.slice(node.start, node.end);
  // Code inside a function written here runs when it is called, not here.
  const closures = nodes.filter(([node]) => FUNCTIONS.has(node.type)).map(([node]) => node);
  const inClosure = (at: number) => closures.some((f) => at >= f.start && at < f.end);
  /**
   * A statement without effects that reads no name but its own here (`let cursor = "0-0"`,
   * `const listener = (m) => ...`): it can go anywhere its names are not used before it.
   */
  const readsNothing = (node: Node) => {
    const own = declaredBy(node);
    const readsHere = (n: Name) =>
      n.start >= node.start && n.start < node.end && !own.includes(n.name) && !inClosure(n.start);
    return !hasEffects(node) && !names.some(readsHere);
  };

  const found: (Omit<Mutant, "key"> & { at: number })[] = [];
  const add = (operator: Operator, at: number, description: string, text: string) =>
    found.push({ operator, at, line: lineOf(source, at), description, text });

  if (operators.includes("await")) {
    for (const [node] of nodes) {
      if (node.type !== "AwaitExpression") continue;
      const argument = node.argument as Node;
      add(
        "await",
        node.start,
        `remove the await of \`${snippet(code(argument))}\``,
        splice(source, node.start, argument.start, ""),
      );
    }
  }

  const lists: Node[][] = [];
  for (const [node] of nodes) {
    const field = STATEMENT_LISTS[node.type];
    if (field) lists.push((node[field] as Node[]).filter((s) => !isInert(s)));
  }

  if (operators.includes("delete")) {
    for (const statements of lists) {
      for (const statement of statements) {
        const declared = declaredBy(statement);
        if (declared.length > 0 && usedOutside(declared, statement)) continue;
        const [start, end] = deletionSpan(source, statement);
        add(
          "delete",
          statement.start,
          `delete \`${snippet(code(statement))}\``,
          splice(source, start, end, ""),
        );
      }
    }
  }

  if (operators.includes("swap")) {
    for (const statements of lists) {
      for (let i = 0; i + 1 < statements.length; i++) {
        const first = statements[i] as Node;
        const second = statements[i + 1] as Node;
        // Moving a jump above a statement only skips that statement: the delete operator's
        // mutant. A user moved above its declaration cannot compile. Two statements that only
        // read (declarations of values) do the same in either order.
        if (JUMPS.has(second.type) || JUMPS.has(first.type)) continue;
        if (usedInside(declaredBy(first), second)) continue;
        if (code(first) === code(second)) continue;
        if (!hasEffects(first) && !hasEffects(second)) continue;
        if (readsNothing(first) || readsNothing(second)) continue;
        const between = source.slice(first.end, second.start);
        add(
          "swap",
          first.start,
          `swap \`${snippet(code(first), 40)}\` with the next statement \`${snippet(code(second), 40)}\``,
          source.slice(0, first.start) +
            code(second) +
            between +
            code(first) +
            source.slice(second.end),
        );
      }
    }
  }

  if (operators.includes("condition")) {
    for (const [node] of nodes) {
      if (["IfStatement", "WhileStatement", "DoWhileStatement"].includes(node.type)) {
        const test = node.test as Node;
        const negated =
          test.type === "UnaryExpression" && test.operator === "!"
            ? code(test.argument as Node)
            : `!(${code(test)})`;
        const keyword = node.type === "IfStatement" ? "if" : "while";
        add(
          "condition",
          test.start,
          `negate \`${keyword} (${snippet(code(test), 60)})\``,
          splice(source, test.start, test.end, negated),
        );
      }
      if (node.type === "BinaryExpression" || node.type === "LogicalExpression") {
        const operator = node.operator as string;
        const flipped = FLIPS[operator];
        if (!flipped) continue;
        const left = node.left as Node;
        const right = node.right as Node;
        const at = source.indexOf(operator, left.end);
        if (at < 0 || at >= right.start) continue;
        add(
          "condition",
          at,
          `\`${operator}\` to \`${flipped}\` in \`${snippet(code(node), 60)}\``,
          splice(source, at, at + operator.length, flipped),
        );
      }
    }
  }

  const parents = new Map<Node, [Node, string]>();
  for (const [node, parent, field] of nodes)
    if (parent && field) parents.set(node, [parent, field]);
  const ancestors = function* (node: Node): Generator<[Node, string]> {
    for (let up = parents.get(node); up; up = parents.get(up[0])) yield up;
  };
  /** `x.method(...)` or `method(...)`: the called name. */
  const calleeName = (call: Node): string | undefined => {
    const callee = call.callee as Node;
    if (callee.type === "Identifier") return callee.name as string;
    if (callee.type === "MemberExpression" && !callee.computed)
      return (callee.property as Node).name as string;
    return undefined;
  };
  /** A log line or an error's message: its text changes what people read, not what the code does. */
  const inMessage = (node: Node) => {
    for (const [up] of ancestors(node)) {
      if (up.type === "NewExpression" && /Error$/.test(calleeName(up) ?? "")) return true;
      if (up.type === "CallExpression") {
        const callee = up.callee as Node;
        const object = callee.type === "MemberExpression" ? (callee.object as Node) : undefined;
        if (object?.type === "Identifier" && object.name === "console") return true;
      }
    }
    return false;
  };
  /** Removes elements [i, i + count) of `list`, the list of `container` (`{...}` or `[...]`), with a comma. */
  const withoutElements = (container: Node, list: (Node | null)[], i: number, count: number) => {
    const first = list[i] as Node;
    const last = list[i + count - 1] as Node;
    const next = list[i + count];
    const previous = list[i - 1];
    if (next) return splice(source, first.start, next.start, "");
    if (previous) return splice(source, previous.end, last.end, "");
    return splice(source, container.start + 1, container.end - 1, "");
  };

  if (operators.includes("property")) {
    const argumentShaped = new Set([
      "ObjectExpression",
      "Property",
      "ArrayExpression",
      "ConditionalExpression",
      "LogicalExpression",
      "ParenthesizedExpression",
      "TSAsExpression",
      "TSSatisfiesExpression",
    ]);
    /** The call `node` is (part of) an argument of: through objects, arrays and `c ? a : b` only. */
    const argumentOf = (node: Node): Node | undefined => {
      for (const [up, field] of ancestors(node)) {
        if ((up.type === "CallExpression" || up.type === "NewExpression") && field === "arguments")
          return up;
        if (!argumentShaped.has(up.type)) return undefined;
      }
      return undefined;
    };
    for (const [node] of nodes) {
      if (node.type === "ObjectExpression" && argumentOf(node)) {
        const properties = node.properties as Node[];
        for (const [i, property] of properties.entries()) {
          add(
            "property",
            property.start,
            `remove \`${snippet(code(property), 40)}\` from \`${snippet(code(node), 60)}\``,
            withoutElements(node, properties, i, 1),
          );
        }
      }
      if (node.type !== "ArrayExpression") continue;
      const elements = node.elements as (Node | null)[];
      const call = argumentOf(node);
      const isCommand =
        (call !== undefined && calleeName(call) === "sendCommand") ||
        isOptionWord(elements[0] ?? undefined);
      if (!isCommand) continue;
      // The command's name (and a subcommand: XGROUP CREATE) stays; each option after it goes,
      // with its value when one follows (COUNT 10), alone when it is a flag (MKSTREAM).
      let i = 0;
      while (isOptionWord(elements[i] ?? undefined)) i++;
      for (; i < elements.length; i++) {
        const element = elements[i];
        if (!isOptionWord(element ?? undefined)) continue;
        const value = elements[i + 1];
        const count = value && !isOptionWord(value) ? 2 : 1;
        const removed = elements.slice(i, i + count).map((e) => code(e as Node));
        add(
          "property",
          (element as Node).start,
          `remove \`${snippet(removed.join(", "), 40)}\` from \`${snippet(code(node), 60)}\``,
          withoutElements(node, elements, i, count),
        );
      }
    }
  }

  if (operators.includes("literal")) {
    const contexts = new Set([
      "Property",
      "VariableDeclarator",
      "BinaryExpression",
      "AssignmentExpression",
      "AssignmentPattern",
      "CallExpression",
      "NewExpression",
      "ReturnStatement",
    ]);
    const contextOf = (node: Node) => {
      for (const [up] of ancestors(node)) if (contexts.has(up.type)) return up;
      return node;
    };
    /** A literal whose value is code, not a key, an import, a message or a string method's separator. */
    const isValue = (node: Node) => {
      const [parent, field] = parents.get(node) ?? [];
      if (!parent) return false;
      if (parent.type === "Property" && field === "key" && !parent.computed) return false;
      if (parent.type === "MemberExpression" && field === "property") return false;
      if (/Import|Export/.test(parent.type)) return false;
      if (parent.type === "CallExpression" && STRING_METHODS.has(calleeName(parent) ?? ""))
        return false;
      return !inMessage(node);
    };
    /** Named like a count, a limit or a size: `{ COUNT: 1 }`, `maxAttempts = 3`. */
    const countName = /count|limit|max|min|size|attempt|retr|tries|batch|length|workers|parallel/i;
    const nameOf = (node: Node | undefined) =>
      node?.type === "Identifier" ? (node.name as string) : undefined;
    const timeName = /ms$|millis|timeout|interval|ttl|delay|seconds|block|idle|expire|lease|wait/i;
    /** A value given to a name matching `pattern`: `{ COUNT: 1 }`, `const blockMs = 100`, `count = 1`. */
    const namedAs = (node: Node, pattern: RegExp) => {
      let [parent, field] = parents.get(node) ?? [];
      // Through a default or a choice: `port: profile.port ?? 6379`, `ms = fast ? 10 : 1000`.
      while (
        parent &&
        (parent.type === "LogicalExpression" || parent.type === "ConditionalExpression")
      )
        [parent, field] = parents.get(parent) ?? [];
      if (!parent) return false;
      const name =
        parent.type === "Property" && field === "value"
          ? nameOf(parent.key as Node)
          : parent.type === "VariableDeclarator" && field === "init"
            ? nameOf(parent.id as Node)
            : parent.type === "AssignmentPattern" && field === "right"
              ? nameOf(parent.left as Node)
              : undefined;
      return name !== undefined && pattern.test(name);
    };
    const usedAsCount = (node: Node) => {
      const [parent] = parents.get(node) ?? [];
      if (parent?.type === "BinaryExpression" && COMPARISONS.has(parent.operator as string))
        return true;
      return namedAs(node, countName);
    };
    const literal = (node: Node, from: string, to: string, by = to) =>
      add(
        "literal",
        node.start,
        `\`${from}\` to \`${to}\` in \`${snippet(code(contextOf(node)), 60)}\``,
        splice(source, node.start, node.end, by),
      );
    for (const [node, parent] of nodes) {
      if (node.type === "Literal" && typeof node.value === "string" && isValue(node)) {
        for (const to of NEIGHBOURS[node.value] ?? []) {
          const quote = code(node)[0] ?? '"';
          literal(node, code(node), `${quote}${to}${quote}`);
        }
      }
      // An exclusive range start, `(${id}` or "(" + id, written as the inclusive id.
      if (
        node.type === "TemplateLiteral" &&
        (node.expressions as Node[]).length > 0 &&
        source[node.start + 1] === "(" &&
        !inMessage(node)
      ) {
        const without = `\`${code(node).slice(2)}`;
        literal(node, snippet(code(node), 30), snippet(without, 30), without);
      }
      if (
        node.type === "BinaryExpression" &&
        node.operator === "+" &&
        (node.left as Node).type === "Literal" &&
        (node.left as Node).value === "(" &&
        !inMessage(node)
      ) {
        const right = code(node.right as Node);
        literal(node, snippet(code(node), 30), snippet(right, 30), right);
      }
      if (node.type !== "Literal" || typeof node.value !== "number") continue;
      // -1 is one value: what is around it decides.
      const outer = parent?.type === "UnaryExpression" ? parent : node;
      if (!isValue(outer) || parents.get(outer)?.[0].type === "MemberExpression") continue;
      const value = node.value;
      // A port or a database number is an address, not an amount.
      if (namedAs(outer, /port|^db$|database/i)) continue;
      const named = usedAsCount(outer) || namedAs(outer, timeName);
      // Times are large numbers (ms) or named so; a small number elsewhere is an index or a step.
      if (value >= 10 || named) {
        const times = value * 1000;
        const divided = value === 0 ? 0 : Math.max(1, Math.round(value / 1000));
        for (const to of [times, divided]) {
          if (to !== value && Number.isSafeInteger(to)) literal(node, code(node), numberText(to));
        }
      }
      if (
        Number.isInteger(value) &&
        value >= 0 &&
        value < 10 &&
        outer === node &&
        usedAsCount(node)
      ) {
        literal(node, code(node), numberText(value + 1));
        if (value > 0) literal(node, code(node), numberText(value - 1));
      }
    }
  }

  /** The nearest function `node` is written in (its code runs when that is called), if any. */
  const inFunction = (node: Node) => {
    for (const [up] of ancestors(node)) if (isFunction(up)) return true;
    return false;
  };

  if (operators.includes("detach")) {
    for (const [node, parent] of nodes) {
      // Only an await whose value nobody reads: `await x(...);` as a statement of its own.
      if (node.type !== "AwaitExpression" || parent?.type !== "ExpressionStatement") continue;
      const argument = node.argument as Node;
      const plain = ["CallExpression", "Identifier", "MemberExpression"].includes(argument.type);
      const promise = plain ? code(argument) : `(${code(argument)})`;
      add(
        "detach",
        node.start,
        `detach \`${snippet(code(argument), 60)}\`: not awaited, its failure caught and ignored`,
        splice(source, node.start, node.end, `void ${promise}.catch(() => {})`),
      );
    }
  }

  if (operators.includes("swallow")) {
    /**
     * Inside the block of a try with a catch, in the same function: a failure there is handled
     * already. A try with only a finally handles nothing.
     */
    const inTry = (node: Node) => {
      for (const [up, field] of ancestors(node)) {
        if (isFunction(up)) return false;
        if (up.type === "TryStatement" && field === "block" && up.handler) return true;
      }
      return false;
    };
    /** An await of this statement's own, not one in a function written here. */
    const awaits = (node: Node): boolean => {
      if (node.type === "AwaitExpression") return true;
      if (isFunction(node)) return false;
      for (const [child] of children(node)) if (awaits(child)) return true;
      return false;
    };
    for (const [node] of nodes) {
      if (node.type !== "ExpressionStatement" || !awaits(node)) continue;
      if (!inFunction(node) || inTry(node)) continue;
      add(
        "swallow",
        node.start,
        `swallow the failure of \`${snippet(code(node), 60)}\` in try/catch`,
        splice(source, node.start, node.end, `try { ${code(node)} } catch {}`),
      );
    }
  }

  if (operators.includes("once")) {
    /**
     * A jump of `type` (break or continue) in a loop's body that leaves or restarts that loop
     * itself: not one of an inner loop (or, for a break, an inner switch). A labelled one counts.
     */
    const jumps = (node: Node, type: string, inner = false): boolean => {
      if (isFunction(node)) return false;
      if (node.type === type) return Boolean(node.label) || !inner;
      const nested =
        inner ||
        LOOPS.has(node.type) ||
        (type === "BreakStatement" && node.type === "SwitchStatement");
      for (const [child] of children(node)) if (jumps(child, type, nested)) return true;
      return false;
    };
    for (const [node] of nodes) {
      if (!LOOPS.has(node.type) || !inFunction(node)) continue;
      const body = node.body as Node;
      const head =
        node.type === "DoWhileStatement"
          ? `do … while (${code(node.test as Node)})`
          : source.slice(node.start, body.start).trim();
      const continues = jumps(body, "ContinueStatement");
      if (node.type === "WhileStatement" && !continues && !jumps(body, "BreakStatement")) {
        // `while (c) {...}` as `if (c) {...}`: what a learner who tried one message writes.
        add(
          "once",
          node.start,
          `\`${snippet(head, 60)}\` as an if: one round only`,
          splice(source, node.start, node.start + "while".length, "if"),
        );
        continue;
      }
      let text: string;
      if (body.type === "BlockStatement") {
        const close = body.end - 1;
        const lineStart = source.lastIndexOf("\n", close - 1) + 1;
        const indent = source.slice(lineStart, close);
        text = /^[ \t]*$/.test(indent)
          ? splice(source, lineStart, lineStart, `${indent}  break;\n`)
          : splice(source, close, close, " break; ");
      } else {
        text = splice(source, body.start, body.end, `{ ${code(body)} break; }`);
      }
      add(
        "once",
        node.start,
        `\`${snippet(head, 60)}\` with a break at the end: one round only${continues ? " (unless it continues)" : ""}`,
        text,
      );
    }
  }

  const texts = new Set([source]);
  const keys = new Map<string, number>();
  const result: Mutant[] = [];
  found.sort((a, b) => a.at - b.at);
  for (const operator of operators) {
    for (const { at: _, ...mutant } of found) {
      if (mutant.operator !== operator || texts.has(mutant.text)) continue;
      texts.add(mutant.text);
      const base = `${operator}: ${mutant.description}`;
      const seen = (keys.get(base) ?? 0) + 1;
      keys.set(base, seen);
      result.push({ ...mutant, key: seen === 1 ? base : `${base} #${seen}` });
    }
  }
  return result;
}
