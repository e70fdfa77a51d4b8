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

export const OPERATORS = ["await", "delete", "swap", "condition"] as const;
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

function hasEffects(node: Node): boolean {
  if (EFFECTS.has(node.type)) return true;
  if (node.type === "UnaryExpression" && node.operator === "delete") return true;
  // A function written here runs later, when called: writing it has no effect.
  if (FUNCTIONS.has(node.type)) return false;
  for (const [child] of children(node)) if (hasEffects(child)) return true;
  return false;
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
