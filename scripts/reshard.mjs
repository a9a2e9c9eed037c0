// Grows edgeid's user shards while it serves (README "Growing the number of shards"): after
// more USERS_n bindings are deployed, repeats `POST /operator/shards` (each call moves a few
// buckets, finishing any move an interrupted run left) until every bucket is where the striping
// over all bound shards puts it, then runs the check (`GET /operator/shards`): every account in
// exactly one shard, the one the bucket map names. Safe to interrupt and run again.
//
//   OPERATOR_TOKEN=… node scripts/reshard.mjs --url https://id.example.com [--max-moves 16]
//   node scripts/reshard.mjs --check --url …      (the check alone)
const args = process.argv.slice(2);
const option = (name) => {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : undefined;
};
const base = (option("--url") ?? "http://127.0.0.1:8787").replace(/\/$/, "");
const token = option("--token") ?? process.env.OPERATOR_TOKEN;
const maxMoves = Number(option("--max-moves") ?? 16);
if (!token) {
  console.error("reshard: set OPERATOR_TOKEN (the worker's secret) or pass --token");
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// One call, tried again on a network error or a 5xx (a step that failed half way is finished
/// by the next one).
async function call(method, body) {
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await fetch(`${base}/operator/shards`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({}));
      if (response.ok) return answer;
      if (response.status < 500 || attempt === 10) {
        throw new Error(`${method} /operator/shards: ${response.status} ${JSON.stringify(answer)}`);
      }
    } catch (err) {
      if (attempt === 10 || err.message.startsWith(`${method} /operator/shards`)) throw err;
    }
    await sleep(Math.min(500 * attempt, 5000));
  }
}

try {
  if (!args.includes("--check")) {
    let moved = 0;
    for (;;) {
      const progress = await call("POST", { max_moves: maxMoves });
      moved += progress.moved;
      console.log(
        `reshard: ${progress.shards} shards, ${moved} buckets moved, ${progress.buckets_to_move} to go` +
          (progress.held_elsewhere ? `, ${progress.held_elsewhere} held by another mover` : ""),
      );
      if (progress.buckets_to_move === 0) break;
      if (progress.moved === 0) await sleep(2000); // another mover holds what is left
    }
  }
  const check = await call("GET");
  for (const shard of check.shards) {
    console.log(`reshard: shard ${shard.shard}: ${shard.buckets} buckets, ${shard.accounts} accounts`);
  }
  if (!check.ok) {
    console.error(
      `reshard: check failed: misplaced buckets ${JSON.stringify(check.misplaced_buckets)}, ${check.moves_under_way} moves under way`,
    );
    process.exit(1);
  }
  console.log(`reshard: check ok: ${check.accounts} accounts, each in exactly one shard`);
} catch (err) {
  console.error(`reshard: ${err.message}`);
  process.exit(1);
}
