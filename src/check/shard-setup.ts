/**
 * The first setup file of a check's test process when its tests are shared among several
 * processes (lesson.json "shards", see ./shards.ts). Every process goes through the whole check
 * file in order; before each test it tries to claim it (./shard-claims.ts), and only the one
 * that does runs it: the others skip it at once, before any other hook of the test. So a
 * process held up in a slow test leaves the tests after it to the others, with no plan made in
 * advance. A test named in lesson.json "alone" runs while no other process is inside a test.
 */
import { beforeEach } from "vitest";
import { CLAIMED_ELSEWHERE } from "./events.ts";
import { claim, enterAlone, enterShared } from "./shard-claims.ts";

const dir = process.env.WORKBOOK_SHARDS_DIR;
const me = process.env.WORKBOOK_SHARD ?? "0";
const alone = new Set<string>(JSON.parse(process.env.WORKBOOK_ALONE ?? "[]") as string[]);

if (dir) {
  beforeEach(async (context) => {
    if (!claim(dir, context.task.id)) {
      context.skip(CLAIMED_ELSEWHERE);
      return;
    }
    const enter = alone.has(context.task.name) ? enterAlone : enterShared;
    context.onTestFinished(await enter(dir, me));
  });
}
