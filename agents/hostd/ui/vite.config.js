import { defineConfig } from 'vite';

// Plain ES modules, no framework; hostd serves dist/ at /.
export default defineConfig({
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false },
});
