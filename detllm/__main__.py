from .cli import console_main

# Run only as the main module: processes started with ``spawn`` (vLLM's engine core)
# may import the main module again, and must not run the command a second time.
if __name__ == "__main__":
    console_main()
