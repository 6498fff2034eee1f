// Lint rules: the recommended sets of ESLint and typescript-eslint, run by the test command.
const js = require("@eslint/js");
const tseslint = require("typescript-eslint");

// Which part may import which (README, "Layout"): a relative import that climbs into a folder
// outside a part's list fails the lint, and so the test command.
const TOP = ["catalog", "cli", "cluster", "common", "image", "pulumi", "world"];
function onlyFrom(part, allowed) {
  const banned = TOP.filter((t) => t !== part && !allowed.includes(t));
  return {
    files: [`provider/${part}/**/*.ts`],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              regex: `^(\\.\\./)+(${banned.join("|")})(/|$)`,
              message: `provider/${part} may import only from ${["itself", ...allowed.map((a) => `provider/${a}`)].join(", ")} (README, "Layout")`,
            },
          ],
        },
      ],
    },
  };
}
const zones = [
  onlyFrom("common", []),
  onlyFrom("catalog", ["common"]),
  onlyFrom("image", ["common"]),
  onlyFrom("cluster", ["common", "catalog", "image"]),
  onlyFrom("world", ["common", "catalog"]),
  onlyFrom("pulumi", ["common", "catalog", "image", "world"]),
  {
    files: ["sdk/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              regex: "^(\\.\\./)+provider/(catalog|cli|cluster)(/|$)",
              message:
                'the SDK may import only provider/common, provider/image, provider/pulumi and provider/world (README, "Layout")',
            },
          ],
        },
      ],
    },
  },
];

module.exports = tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "**/node_modules/**", "schema/gen/**", "coverage/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-require-imports": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["**/*.js"],
    languageOptions: {
      sourceType: "commonjs",
      globals: {
        require: "readonly",
        module: "writable",
        __dirname: "readonly",
        process: "readonly",
        console: "readonly",
      },
    },
  },
  ...zones,
);
