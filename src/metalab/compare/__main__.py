from metalab.compare.cli import main

main()
