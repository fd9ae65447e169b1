// Helpers shared by the Node.js checkers in tools/checkers (not a public module).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { createRequire } = require('module');

const INSTALL = 'tools/checkers/install (or: make install-dev)';
const cache = process.env.AINODE_CHECKERS_CACHE || path.join(os.homedir(), '.cache', 'ainode-checkers');

// The npm modules: installed by `npm ci` of package-lock.json into a folder named after its hash.
function modulesDir() {
  const lock = fs.readFileSync(path.join(__dirname, 'package-lock.json'));
  const hash = crypto.createHash('sha256').update(lock).digest('hex').slice(0, 16);
  return path.join(cache, `npm-${hash}`);
}

function ohifDist() {
  const line = fs.readFileSync(path.join(__dirname, 'versions'), 'utf8').split('\n').find((l) => l.startsWith('ohif '));
  return path.join(cache, `ohif-${line.split(/\s+/)[2]}`, 'dist');
}

// require() from the checkers' node_modules; a missing module ends the run with status 2.
function requireFromCache(prog) {
  const dir = modulesDir();
  if (!fs.existsSync(path.join(dir, '.complete'))) {
    process.stderr.write(`${prog}: the checkers' npm modules are not installed in ${dir}; run ${INSTALL}\n`);
    process.exit(2);
  }
  return createRequire(path.join(dir, 'package.json'));
}

function isPart10(file) {
  try {
    const fd = fs.openSync(file, 'r');
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 128);
    fs.closeSync(fd);
    return b.toString('latin1') === 'DICM';
  } catch {
    return false;
  }
}

// [{file, explicit, missing}] for every file under the arguments, folders in sorted order
function walk(args) {
  const out = [];
  const visit = (p, explicit) => {
    let st;
    try { st = fs.statSync(p); } catch { out.push({ file: p, explicit, missing: true }); return; }
    if (st.isDirectory()) for (const n of fs.readdirSync(p).sort()) visit(path.join(p, n), false);
    else out.push({ file: p, explicit, missing: false });
  };
  for (const a of args) visit(a, true);
  return out;
}

module.exports = { INSTALL, cache, modulesDir, ohifDist, requireFromCache, isPart10, walk };
