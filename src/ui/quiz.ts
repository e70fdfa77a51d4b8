import { select } from "@inquirer/prompts";
import kleur from "kleur";
import type { Lesson, QuizQuestion } from "../catalog.ts";
import { updateProgress } from "../progress.ts";
import { screenWidth, wrap } from "./term.ts";
import { promptTheme } from "./theme.ts";

/** One line on a quiz score, for the learner. */
export function scoreLine(score: number, total: number): string {
  if (score === total) return `${score} of ${total}: all right.`;
  return `${score} of ${total} right. The explanations above say why; k takes the check again.`;
}

/**
 * A lesson's knowledge check: each question, then right or wrong and why. The score is kept in
 * the progress file. The caller has handed the terminal over (no raw key reading meanwhile).
 */
export async function runQuiz(lesson: Lesson, questions: QuizQuestion[]): Promise<number> {
  const width = screenWidth();
  process.stdout.write("\x1b[H\x1b[2J");
  console.log(kleur.bold(`Knowledge check · lesson ${lesson.number} · ${lesson.title}`));
  console.log(kleur.dim(`${questions.length} questions. ↑↓ to choose, enter.\n`));
  let score = 0;
  for (const [index, question] of questions.entries()) {
    const answer = await select({
      message: wrap(`${index + 1}. ${question.question}`, width - 2).join("\n  "),
      // Wrapped here, between words: the terminal would split a long choice mid-word.
      choices: question.choices.map((choice, value) => ({
        name: wrap(choice, width - 4).join("\n    "),
        value,
      })),
      // The answer line must not carry a tick: a wrong answer is not done right.
      theme: { ...promptTheme, prefix: { idle: promptTheme.prefix.idle, done: "›" } },
    });
    const right = answer === question.answer;
    if (right) score++;
    const verdict = right
      ? kleur.green("✓ Right.")
      : kleur.red(`✗ Not quite. The answer: ${question.choices[question.answer] ?? ""}.`);
    for (const line of wrap(`${verdict} ${question.why}`, width)) console.log(line);
    console.log("");
  }
  updateProgress((p) => {
    p.quiz = {
      ...p.quiz,
      [lesson.id]: { score, total: questions.length, at: new Date().toISOString() },
    };
  });
  console.log(kleur.bold(scoreLine(score, questions.length)));
  console.log(kleur.dim("Press any key to go back to the lesson."));
  return score;
}
