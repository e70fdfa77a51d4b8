/**
 * The knowledge checks (lessons/NN-slug/quiz.json) must be fair: one right answer that the
 * explanation does not contradict, choices a learner can tell apart, no question asked twice,
 * and none of the claims the workbook teaches to be false.
 */
import { describe, expect, test } from "vitest";
import { loadCatalog, type QuizQuestion } from "../src/catalog.ts";

const quizzes = loadCatalog()
  .filter((lesson) => lesson.quiz !== undefined)
  .map((lesson) => [lesson.id, lesson.quiz as QuizQuestion[]] as const);

/** Claims some lesson shows to be wrong; a quiz that states one teaches the opposite. */
const MYTHS: [RegExp, string][] = [
  [
    /\bautomatic(ally)? (retr|reassign|re-?deliver|claim)/i,
    "Redis never retries or reassigns work by itself",
  ],
  [
    /\bredis (retries|reassigns|re-?delivers)\b/i,
    "Redis never retries or reassigns work by itself",
  ],
  [/HGETALL[^.]*,? then SUBSCRIBE/i, "subscribe first, then read the snapshot (lesson 04)"],
  [/\bexactly[- ]once deliver/i, "consumer groups deliver at least once"],
];

function words(text: string): Set<string> {
  return new Set(text.toLowerCase().match(/[a-z0-9>]+/g) ?? []);
}

/** Share of words two texts have in common (Jaccard): 1 for the same question reworded a little. */
function overlap(a: string, b: string): number {
  const x = words(a);
  const y = words(b);
  const common = [...x].filter((w) => y.has(w)).length;
  return common / (x.size + y.size - common);
}

function normalized(text: string): string {
  return text.toLowerCase().replace(/\s+/g, " ").trim();
}

test("at least one lesson has a knowledge check", () => {
  expect(quizzes.length).toBeGreaterThan(0);
});

describe.each(quizzes)("the knowledge check of %s", (_id, questions) => {
  test("each question has its fields, and exactly one right choice among distinct ones", () => {
    for (const q of questions) {
      expect(Object.keys(q).sort(), q.question).toEqual(["answer", "choices", "question", "why"]);
      expect(q.question.trim().length, "question").toBeGreaterThan(0);
      expect(q.choices.length, q.question).toBeGreaterThanOrEqual(3);
      // One index, not a list: exactly one choice is right.
      expect(Number.isInteger(q.answer), q.question).toBe(true);
      expect(q.answer, q.question).toBeGreaterThanOrEqual(0);
      expect(q.answer, q.question).toBeLessThan(q.choices.length);
      const choices = q.choices.map(normalized);
      expect(new Set(choices).size, `${q.question}: two choices say the same`).toBe(choices.length);
      expect(
        choices.every((c) => c.length > 0),
        q.question,
      ).toBe(true);
    }
  });

  test("each explanation is there and does not contradict its answer", () => {
    for (const q of questions) {
      expect(q.why.trim().length, q.question).toBeGreaterThan(40);
      const right = q.choices[q.answer] ?? "";
      // An explanation that opens by rejecting the answer contradicts it.
      expect(q.why, q.question).not.toMatch(/^(no|wrong|false|incorrect)\b/i);
      for (const text of [q.question, right, q.why]) {
        for (const [myth, truth] of MYTHS) {
          expect(text, `${q.question}: ${truth}`).not.toMatch(myth);
        }
      }
    }
  });

  test("no two questions are alike", () => {
    for (const [i, a] of questions.entries()) {
      for (const b of questions.slice(i + 1)) {
        expect(overlap(a.question, b.question), `"${a.question}" and "${b.question}"`).toBeLessThan(
          0.6,
        );
      }
    }
  });

  test("the right answers are not always in the same place", () => {
    if (questions.length < 4) return;
    expect(new Set(questions.map((q) => q.answer)).size).toBeGreaterThan(1);
  });
});

test("the myths are caught where they used to be", () => {
  const old = "the entry can be claimed and retried: that is the automatic retry.";
  expect(MYTHS.some(([myth]) => myth.test(old))).toBe(true);
  expect(
    MYTHS.some(([myth]) => myth.test("HGETALL ocr:state (the picture now), then SUBSCRIBE")),
  ).toBe(true);
});
