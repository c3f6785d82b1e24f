/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/tests"],
  // Type-checking is `tsc --noEmit`'s job: ts-jest only transpiles, which keeps tests fast.
  transform: { "^.+\\.ts$": ["ts-jest", { isolatedModules: true }] },
};
