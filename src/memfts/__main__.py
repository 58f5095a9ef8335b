from memfts.cli import main

main()
