/**
 * The simulated AI services. Each one is a pure function of the document's text, so every result
 * can be checked exactly, wrapped in a call that adds latency and failures like a remote model:
 *
 * - latency: `latencyMs` on average (uniformly 0.5x to 1.5x);
 * - transient failures: with probability `failureRate`, but only on a document's first two
 *   deliveries to a stage, so bad luck never looks like a poison document;
 * - poison: an upload containing `[[poison:<stage>]]` fails at that stage on every delivery;
 * - crash: an upload containing `[[crash:<stage>]]` kills the worker process on its first
 *   delivery to that stage (see stage-loop.ts), like a model server taking the worker down.
 */
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Stage } from "./keys.ts";

export interface OcrResult {
  text: string;
  pages: number;
  words: number;
}
export type EntityType = "ORG" | "PERSON" | "DATE" | "MONEY";
export interface Entity {
  type: EntityType;
  text: string;
}
export interface NerResult {
  entities: Entity[];
}
export interface ClassifyResult {
  category: string;
  confidence: number;
}
export interface EmbedResult {
  model: string;
  vector: number[];
}

const MARKER = /\[\[(?:poison|crash):[a-z]+\]\]/g;

/** OCR: page breaks counted, hyphenated line breaks joined, whitespace collapsed. */
export function ocr(scan: string): OcrResult {
  const pages = scan.split("\f").length;
  const text = scan
    .replace(MARKER, " ")
    .replace(/-\n(?=[a-z])/g, "")
    .replace(/\s+/g, " ")
    .trim();
  return { text, pages, words: text.length === 0 ? 0 : text.split(" ").length };
}

const ENTITY_PATTERNS: [EntityType, RegExp][] = [
  ["ORG", /\b[A-Z][A-Za-z&]*(?: [A-Z][A-Za-z&]*)* (?:Ltd|LLP|Inc|GmbH|plc|LLC|BV)\b/g],
  ["PERSON", /\b(?:Mr|Ms|Mrs|Dr)\.? [A-Z][a-z]+ [A-Z][a-z]+\b/g],
  ["DATE", /\b\d{4}-\d{2}-\d{2}\b/g],
  ["MONEY", /\b(?:EUR|USD|GBP) \d{1,3}(?:,\d{3})*(?:\.\d{2})?\b/g],
];

/** NER: organisations, people, dates and amounts, in order of appearance, each once. */
export function ner(text: string): NerResult {
  const found: { at: number; entity: Entity }[] = [];
  for (const [type, pattern] of ENTITY_PATTERNS) {
    for (const match of text.matchAll(pattern)) {
      found.push({ at: match.index, entity: { type, text: match[0] } });
    }
  }
  found.sort((a, b) => a.at - b.at);
  const seen = new Set<string>();
  const entities: Entity[] = [];
  for (const { entity } of found) {
    const id = `${entity.type}:${entity.text}`;
    if (!seen.has(id)) {
      seen.add(id);
      entities.push(entity);
    }
  }
  return { entities };
}

const CATEGORIES: [string, string[]][] = [
  ["nda", ["non-disclosure", "confidential information", "disclosing party"]],
  ["lease", ["lease", "tenant", "landlord", "premises"]],
  ["employment", ["employment", "employee", "salary"]],
  ["court-filing", ["plaintiff", "defendant", "court", "claim no"]],
  ["invoice", ["invoice", "amount due", "payment terms"]],
];

function occurrences(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

/** Classification: the category whose keywords occur most often; amounts count for invoices. */
export function classify(text: string, entities: Entity[]): ClassifyResult {
  const lower = text.toLowerCase();
  const scores = CATEGORIES.map(([category, words]) => {
    let score = words.reduce((sum, word) => sum + occurrences(lower, word), 0);
    if (category === "invoice") score += entities.filter((e) => e.type === "MONEY").length;
    return { category, score };
  });
  const total = scores.reduce((sum, s) => sum + s.score, 0);
  const best = scores.reduce((a, b) => (b.score > a.score ? b : a));
  if (best.score === 0) return { category: "correspondence", confidence: 0.4 };
  return { category: best.category, confidence: Math.round(50 + (50 * best.score) / total) / 100 };
}

/** Embedding: an 8-dimensional unit vector derived from the text and its category. */
export function embed(text: string, category: string): EmbedResult {
  const digest = createHash("sha256").update(`${category}\n${text}`).digest();
  const raw = Array.from({ length: 8 }, (_, i) => digest.readInt32BE(i * 4) / 2 ** 31);
  const norm = Math.hypot(...raw) || 1;
  return { model: "sim-embed-8", vector: raw.map((x) => Math.round((x / norm) * 1e6) / 1e6) };
}

/** A document hash as the stage workers see it: the upload plus earlier stages' results. */
export type DocFields = Record<string, string>;

function parsed<T>(doc: DocFields, field: string): T {
  const value = doc[field];
  if (value === undefined) throw new PermanentError(`the document has no ${field} result yet`);
  return JSON.parse(value) as T;
}

/** A stage's result for a document, as the JSON string stored in the document's hash. */
export function compute(stage: Stage, doc: DocFields): string {
  switch (stage) {
    case "ocr": {
      if (doc.text === undefined) throw new PermanentError("the document has no text");
      return JSON.stringify(ocr(doc.text));
    }
    case "ner":
      return JSON.stringify(ner(parsed<OcrResult>(doc, "ocr").text));
    case "classify":
      return JSON.stringify(
        classify(parsed<OcrResult>(doc, "ocr").text, parsed<NerResult>(doc, "ner").entities),
      );
    case "embed":
      return JSON.stringify(
        embed(parsed<OcrResult>(doc, "ocr").text, parsed<ClassifyResult>(doc, "classify").category),
      );
  }
}

/** Every stage's expected result for an upload: what the audit compares the pipeline's with. */
export function expectedResults(text: string): Record<Stage, string> {
  const doc: DocFields = { text };
  doc.ocr = compute("ocr", doc);
  doc.ner = compute("ner", doc);
  doc.classify = compute("classify", doc);
  doc.embed = compute("embed", doc);
  return { ocr: doc.ocr, ner: doc.ner, classify: doc.classify, embed: doc.embed };
}

/** A failure that retrying cannot fix. */
export class PermanentError extends Error {
  override name = "PermanentError";
}

/** A failure that may go away on the next delivery. */
export class TransientError extends Error {
  override name = "TransientError";
}

const POISON_REASONS: Record<Stage, string> = {
  ocr: "OCR could not read the scan: every page is blank",
  ner: "the NER model rejected the text: it exceeds the context window",
  classify: "the classifier returned no label: the input is not a legal document",
  embed: "the embedding service returned an empty vector",
};

export function hasMarker(text: string | undefined, kind: "poison" | "crash", stage: Stage) {
  return text?.includes(`[[${kind}:${stage}]]`) ?? false;
}

export interface CallOptions {
  /** Average latency in milliseconds. */
  latencyMs: number;
  /** Probability of a transient failure on a document's first two deliveries. */
  failureRate: number;
  /** Which delivery of this document to this stage this is: 1 for the first. */
  attempt: number;
  random?: () => number;
}

/** Calls the simulated service for `stage`: waits, maybe fails, returns the JSON result. */
export async function callService(stage: Stage, doc: DocFields, options: CallOptions) {
  const random = options.random ?? Math.random;
  if (options.latencyMs > 0) await sleep(options.latencyMs * (0.5 + random()));
  if (hasMarker(doc.text, "poison", stage)) throw new PermanentError(POISON_REASONS[stage]);
  if (options.attempt <= 2 && random() < options.failureRate) {
    throw new TransientError(`the ${stage} service timed out (a simulated transient failure)`);
  }
  return compute(stage, doc);
}
