// Compiles every contracts/*.sol with the pinned npm `solc` and writes contracts/build/<Name>.json
// ({contractName, abi, bytecode, sourceHash, compiler}). Tests call this when sourceHash is stale.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "build");
const files = readdirSync(here).filter((f) => f.endsWith(".sol")).sort();
const sources = Object.fromEntries(
  files.map((f) => [f, { content: readFileSync(join(here, f), "utf8") }]),
);
const hash = createHash("sha256");
for (const f of files) hash.update(f).update("\0").update(sources[f].content).update("\0");
const sourceHash = hash.digest("hex");

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

mkdirSync(outDir, { recursive: true });
for (const file of files) {
  for (const [name, contract] of Object.entries(output.contracts[file] ?? {})) {
    const artefact = {
      contractName: name,
      abi: contract.abi,
      bytecode: "0x" + contract.evm.bytecode.object,
      sourceHash,
      compiler: solc.version(),
    };
    writeFileSync(join(outDir, `${name}.json`), JSON.stringify(artefact, null, 2) + "\n");
  }
}
console.log(`compiled ${files.join(", ")} -> ${outDir} (${sourceHash.slice(0, 12)})`);
