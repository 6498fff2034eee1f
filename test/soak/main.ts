import { FAULTS, FaultKind, runSoak } from "./soak";

const HELP = `npm run soak -- [--rounds N] [--seed S] [--catalog sqlite|etcd] [options]

The soak of issue 11: a world of two datacenters (a-1, b-1) whose transfers are shaped
(--max-transfer-rate), and one fault per round at a random moment, rotating over:
  ${FAULTS.join(", ")}
(etcd-member-kill only with --catalog etcd: a 3-member etcd cluster is the catalog).
After each fault it recovers as an operator would (\`gci world up\` after a daemon kill, a
client that retries its request, \`pulumi cancel\` and \`up\` again after a killed engine,
restarting a killed etcd member) and then checks, from outside (catalog, /proc, the store
folders, the health service): every "present" placement re-hashes to its digest; every VM
group has exactly count live instances, none twice, no instance process the catalog does not
know; bytes the sender wrote after a transfer kill <= image size - chunks verified before the
kill + one chunk (+1 MiB for its logs and catalog writes); no group without live VMs; no
transfer left "transferring"; no language-host.js/dynamic-host.js left after the engine; every
daemon SERVING. It prints one line per round and a JSON summary (violations by kind, recovery
seconds per fault kind: min/median/p90/max); it exits 1 on any violation.

Options:
  --rounds N           rounds to run (default 10)
  --seed S             seed of the random moments (default: from the clock; printed)
  --first-round R      number of the first round (replay round R: --seed S --first-round R --rounds 1)
  --catalog KIND       sqlite (default) or etcd
  --faults a,b         only these fault kinds
  --image-mib M        size of each round's fresh image (default 64)
  --rate-mib R         --max-transfer-rate of every cluster manager, MiB/s (default 24)
  --recovery-timeout S seconds a recovery may take before it counts as a violation (default 20)
  --keep yes           keep the soak's folder (world, daemon logs, stores) to look into a violation
  --help               this text`;

function parse(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") out.help = "1";
    else if (a.startsWith("--") && i + 1 < argv.length) out[a.slice(2)] = argv[++i];
    else throw new Error(`soak: unknown argument "${a}": see npm run soak -- --help`);
  }
  return out;
}

function whole(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`soak: --${name} "${value}" is not a whole number >= ${min}`);
  return n;
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  if (args.help) {
    console.log(HELP);
    return;
  }
  const catalog = args.catalog ?? "sqlite";
  if (catalog !== "sqlite" && catalog !== "etcd")
    throw new Error(`soak: --catalog "${catalog}" is not sqlite or etcd`);
  const faults = args.faults?.split(",").map((f) => {
    if (!(FAULTS as readonly string[]).includes(f))
      throw new Error(`soak: unknown fault "${f}": choose from ${FAULTS.join(", ")}`);
    return f as FaultKind;
  });
  const summary = await runSoak({
    rounds: whole("rounds", args.rounds, 10, 1),
    seed: whole("seed", args.seed, Date.now() % 1_000_000, 0),
    firstRound: whole("first-round", args["first-round"], 1, 1),
    catalog,
    faults,
    imageMiB: whole("image-mib", args["image-mib"], 64, 5),
    rateBytes: whole("rate-mib", args["rate-mib"], 24, 1) * 1024 * 1024,
    keep: args.keep === "yes",
    recoveryTimeoutMs: whole("recovery-timeout", args["recovery-timeout"], 20, 1) * 1000,
  });
  console.log(JSON.stringify(summary));
  if (summary.violations > 0) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
