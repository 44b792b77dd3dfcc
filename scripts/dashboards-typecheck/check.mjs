#!/usr/bin/env node
// Type-checks Grafana dashboard JSON against @grafana/schema with `tsc --noEmit --strict`.
//
//   node check.mjs [--keep] PATH...    PATH: a dashboard .json file, or a folder (its *.json)
//
// For each dashboard it writes one .ts file into a temporary folder beside this script, which
// assigns the JSON to the schema's types (see dashboard-json.ts):
//   - the whole document to Dashboard;
//   - each panel's options and custom field config to its panel plugin's Options and FieldConfig;
//   - each panel's targets to the Prometheus or InfluxQL query model (by the target's datasource).
// then runs the TypeScript compiler installed here (npm ci) over those files. Errors are printed
// with the dashboard file and the panel they are in. Exit status: 0 when every file passes,
// 1 when tsc found errors, 2 for a usage or setup problem. --keep leaves the .ts files in place.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = path.join(here, 'node_modules', 'typescript', 'bin', 'tsc');

class SetupError extends Error {}

function fail(message) {
  throw new SetupError(message);
}

function dashboardFiles(args) {
  const files = [];
  for (const arg of args) {
    const stat = fs.statSync(arg, { throwIfNoEntry: false });
    if (!stat) fail(`no such file or folder: ${arg}`);
    if (stat.isDirectory()) {
      for (const name of fs.readdirSync(arg).sort()) {
        if (name.endsWith('.json')) files.push(path.join(arg, name));
      }
    } else {
      files.push(arg);
    }
  }
  if (files.length === 0) fail('no dashboard .json files given');
  return files;
}

const literal = (value) => JSON.stringify(value, null, 2);

function* panelsOf(panels) {
  for (const panel of panels ?? []) {
    yield panel;
    if (panel && panel.type === 'row') yield* panelsOf(panel.panels);
  }
}

// The TypeScript source checking one dashboard. Comments name what the next statement checks,
// so an error's line can be traced back to its panel.
function checks(dashboard) {
  const out = [
    "import type { DashboardJson, PanelCustom, PanelOptions, Query } from '../dashboard-json';",
    '',
    '// dashboard',
    `export const dashboard: DashboardJson = ${literal(dashboard)};`,
  ];
  let n = 0;
  for (const panel of panelsOf(dashboard.panels)) {
    if (!panel || typeof panel !== 'object' || panel.type === 'row') continue;
    n += 1;
    const where = `panel ${panel.id} ${JSON.stringify(panel.title ?? '')}`;
    const kind = JSON.stringify(String(panel.type));
    out.push('', `// ${where} (options)`);
    out.push(`export const panel${n}Options: PanelOptions<${kind}> = ${literal(panel.options ?? {})};`);
    out.push(`// ${where} (fieldConfig.defaults.custom)`);
    const custom = panel.fieldConfig?.defaults?.custom ?? {};
    out.push(`export const panel${n}Custom: PanelCustom<${kind}> = ${literal(custom)};`);
    (panel.targets ?? []).forEach((target, i) => {
      const source = target?.datasource?.type ?? panel.datasource?.type ?? 'unknown';
      out.push(`// ${where} (targets[${i}])`);
      out.push(
        `export const panel${n}Target${i}: Query<${JSON.stringify(source)}> = ${literal(target)};`,
      );
    });
  }
  return out.join('\n') + '\n';
}

function main() {
  const args = process.argv.slice(2);
  const keep = args.includes('--keep');
  const files = dashboardFiles(args.filter((a) => a !== '--keep'));
  if (!fs.existsSync(tsc)) {
    fail(`TypeScript is not installed in ${here}: run \`npm ci\` there (scripts/backends.sh does)`);
  }
  const work = fs.mkdtempSync(path.join(here, '.check-'));
  const sources = new Map(); // generated .ts name -> [dashboard file, lines]
  try {
    for (const file of files) {
      let dashboard;
      try {
        dashboard = JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch (error) {
        fail(`${file}: not JSON: ${error.message}`);
      }
      const name = `${path.basename(file, '.json').replace(/[^A-Za-z0-9_-]/g, '_')}-${sources.size}.ts`;
      const text = checks(dashboard);
      fs.writeFileSync(path.join(work, name), text);
      sources.set(name, [file, text.split('\n')]);
    }
    const config = {
      extends: '../tsconfig.json',
      files: ['../dashboard-json.ts', ...sources.keys()],
    };
    fs.writeFileSync(path.join(work, 'tsconfig.json'), literal(config));
    const result = spawnSync(process.execPath, [tsc, '-p', work, '--pretty', 'false'], {
      encoding: 'utf8',
    });
    const report = explain(`${result.stdout}${result.stderr}`, work, sources);
    if (result.status === 0) {
      console.log(`dashboards-typecheck: ${files.length} dashboard(s) pass tsc --strict`);
      return 0;
    }
    console.log(report);
    return result.status === null ? 2 : 1;
  } finally {
    if (keep) {
      console.error(`dashboards-typecheck: generated files kept in ${work}`);
    } else {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
}

// tsc's "x.ts(line,col): error TS...: ..." lines, with the dashboard file and the panel added.
function explain(output, work, sources) {
  const lines = [];
  const located = /^(.*?\.ts)\((\d+),(\d+)\): (.*)$/;
  for (const line of output.split('\n')) {
    const match = located.exec(line);
    const name = match && path.basename(match[1]);
    if (!match || !sources.has(name)) {
      if (line.trim()) lines.push(line.replaceAll(work + path.sep, ''));
      continue;
    }
    const [file, text] = sources.get(name);
    const lineNo = Number(match[2]);
    let context = 'dashboard';
    for (let i = lineNo - 1; i >= 0; i -= 1) {
      if (text[i].startsWith('// ')) {
        context = text[i].slice(3);
        break;
      }
    }
    lines.push(`${file}: ${context}: ${match[4]}`);
    lines.push(`    at: ${text[lineNo - 1].trim()}`);
  }
  return lines.join('\n');
}

try {
  process.exitCode = main();
} catch (error) {
  if (!(error instanceof SetupError)) throw error;
  console.error(`dashboards-typecheck: ${error.message}`);
  process.exitCode = 2;
}
